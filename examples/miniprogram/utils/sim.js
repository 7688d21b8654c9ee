/**
 * Simulator mode for `wxauth demo`: the demo server talks to a built-in WeChat simulator, which
 * cannot exchange the codes real `wx.login` gives. Here the mini program's side of WeChat is
 * played by that simulator's control API instead: `wx.login` codes from `/sim/login`, the
 * getPhoneNumber button's data from `/sim/phone`. Everything else is the real `wx`.
 *
 * Not for production: with a real wxauth server pass the global `wx` (the default).
 */
'use strict';

/** POST to the simulator's control API, as a Promise of the JSON answer. */
function simPost(config, path, body) {
  return new Promise(function (resolve, reject) {
    wx.request({
      url: config.simUrl.replace(/\/+$/, '') + path,
      method: 'POST',
      data: body,
      header: { 'Content-Type': 'application/json' },
      success: function (res) {
        if (res.statusCode === 200) resolve(res.data);
        else reject(new Error('simulator ' + path + ' answered ' + res.statusCode + ': ' + JSON.stringify(res.data)));
      },
      fail: function (err) {
        reject(new Error('simulator unreachable at ' + config.simUrl + ': ' + err.errMsg));
      }
    });
  });
}

/**
 * A `wx` for `createAuth({ wx })` whose `login` asks the simulator for a code.
 * @param {{simUrl: string, appId: string, simUser: string}} config
 */
function simulatedWx(config) {
  return {
    login: function (opts) {
      simPost(config, '/sim/login', { appid: config.appId, user: config.simUser }).then(
        function (r) {
          if (opts.success) opts.success({ code: r.code, errMsg: 'login:ok' });
        },
        function (err) {
          if (opts.fail) opts.fail({ errMsg: 'login:fail ' + err.message });
        }
      );
    },
    request: function (opts) {
      return wx.request(opts);
    },
    uploadFile: function (opts) {
      return wx.uploadFile(opts);
    },
    getStorageSync: function (key) {
      return wx.getStorageSync(key);
    },
    setStorageSync: function (key, value) {
      return wx.setStorageSync(key, value);
    },
    removeStorageSync: function (key) {
      return wx.removeStorageSync(key);
    }
  };
}

/**
 * What the getPhoneNumber button would give this simulated user: `{errMsg, code, encryptedData, iv}`.
 * @param {{simUrl: string, appId: string, simUser: string}} config
 */
function phoneButtonDetail(config) {
  return simPost(config, '/sim/phone', { appid: config.appId, user: config.simUser }).then(function (r) {
    return { errMsg: 'getPhoneNumber:ok', code: r.code, encryptedData: r.encryptedData, iv: r.iv };
  });
}

module.exports = {
  simulatedWx: simulatedWx,
  phoneButtonDetail: phoneButtonDetail
};
