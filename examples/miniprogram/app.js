// One wxauth client for the whole mini program: create it once, here, and share it, so that
// concurrent logins and token refreshes are merged.
var wxauth = require('./utils/wxauth.js');
var sim = require('./utils/sim.js');
var config = require('./config.js');

App({
  onLaunch: function () {
    this.simMode = !!config.simUrl;
    this.auth = wxauth.createAuth({
      baseUrl: config.baseUrl,
      apiBaseUrl: config.apiBaseUrl,
      trustedOrigins: config.trustedOrigins,
      appId: config.appId,
      // Against `wxauth demo`, wx.login codes come from its simulator (see utils/sim.js).
      wx: this.simMode ? sim.simulatedWx(config) : wx
    });
  },

  globalData: {
    config: config
  }
});
