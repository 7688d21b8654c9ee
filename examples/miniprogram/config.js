// Where the example's wxauth is. Edit these lines, then recompile in the devtools.
module.exports = {
  // The "API" line that `wxauth demo` prints (default http://127.0.0.1:8080), or your server.
  baseUrl: 'http://127.0.0.1:8080',

  // Your own API, where auth.request({ url: '/api/...' }) goes with the access token; '' sends
  // relative URLs to baseUrl. Other origins that may receive the token go in trustedOrigins
  // (https only, or plain http on 127.0.0.1 / localhost / [::1]).
  apiBaseUrl: '',
  trustedOrigins: [],

  // The mini program the wxauth server knows. `wxauth demo` serves the simulated app
  // wx1234567890abcdef; with a real server, put your own AppID here and in project.config.json.
  appId: 'wx1234567890abcdef',

  // The "simulator" line that `wxauth demo` prints, e.g. 'http://127.0.0.1:53117'. When set, the
  // example gets its wx.login codes and phone-button data from that simulator instead of
  // WeChat (the demo server cannot exchange real codes). Leave it '' against a real server.
  simUrl: '',

  // The simulated WeChat user in simulator mode (any name; a new name is a new user).
  simUser: 'devtools-alice'
};
