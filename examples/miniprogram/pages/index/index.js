var sim = require('../../utils/sim.js');

var app = getApp();

/** An error as one line: the server's code (or the client's) and its message. */
function describe(err) {
  if (err && err.code) return err.code + (err.statusCode ? ' (HTTP ' + err.statusCode + ')' : '') + ': ' + err.message;
  return String((err && err.message) || err);
}

Page({
  data: {
    loggedIn: false,
    simMode: false,
    config: null,
    me: null,
    meJson: '',
    avatarUrl: '',
    status: ''
  },

  onLoad: function () {
    this.setData({
      simMode: app.simMode,
      config: app.globalData.config,
      loggedIn: app.auth.isLoggedIn()
    });
    if (app.auth.isLoggedIn()) this.whoAmI();
    // Handlers return their Promise: the mini program ignores it, tests wait for it.
  },

  /** Shows the user and how the last action went. */
  show: function (user, status) {
    this.setData({
      loggedIn: app.auth.isLoggedIn(),
      me: user,
      meJson: user ? JSON.stringify(user, null, 2) : '',
      avatarUrl: (user && user.avatar_url) || '',
      status: status
    });
  },

  fail: function (what) {
    var page = this;
    return function (err) {
      page.setData({ loggedIn: app.auth.isLoggedIn(), status: what + ' failed: ' + describe(err) });
    };
  },

  /** wx.login → POST /v1/auth/login. */
  onLogin: function () {
    var page = this;
    this.setData({ status: 'logging in…' });
    return app.auth
      .login()
      .then(function (result) {
        page.show(result.user, result.is_new_user ? 'logged in: a new user' : 'logged in: welcome back');
      })
      .catch(this.fail('login'));
  },

  /** GET /v1/me?include=phone (logs in first when needed). */
  whoAmI: function () {
    var page = this;
    return app.auth
      .user({ includePhone: true })
      .then(function (user) {
        page.show(user, 'this is you');
      })
      .catch(this.fail('who am I'));
  },

  /** <button open-type="chooseAvatar">: upload the chosen image. */
  onChooseAvatar: function (e) {
    var page = this;
    var path = e.detail && e.detail.avatarUrl;
    if (!path) return Promise.resolve();
    this.setData({ avatarUrl: path, status: 'uploading the avatar…' });
    return app.auth
      .uploadAvatar(path)
      .then(function (user) {
        page.show(user, 'avatar saved');
      })
      .catch(this.fail('avatar upload'));
  },

  /** <input type="nickname"> inside a form: the value arrives after WeChat's content check. */
  onSaveNickname: function (e) {
    var page = this;
    var nickname = ((e.detail.value && e.detail.value.nickname) || '').trim();
    if (!nickname) {
      this.setData({ status: 'type or pick a nickname first' });
      return Promise.resolve();
    }
    return app.auth
      .updateProfile({ nickname: nickname })
      .then(function (user) {
        page.show(user, 'nickname saved');
      })
      .catch(this.fail('nickname'));
  },

  /** <button open-type="getPhoneNumber">: bind the phone from the button's code. */
  onGetPhoneNumber: function (e) {
    var page = this;
    // In simulator mode the real button's data means nothing to the demo server: ask the
    // simulator what the button would have given this simulated user.
    var detail = app.simMode ? sim.phoneButtonDetail(app.globalData.config) : Promise.resolve(e.detail);
    this.setData({ status: 'binding the phone…' });
    return detail
      .then(function (d) {
        return app.auth.bindPhone(d);
      })
      .then(function () {
        return app.auth.user({ includePhone: true });
      })
      .then(function (user) {
        page.show(user, 'phone bound');
      })
      .catch(this.fail('phone'));
  },

  /** POST /v1/auth/logout; the tokens are forgotten either way. */
  onLogout: function () {
    var page = this;
    return app.auth
      .logout()
      .then(function () {
        page.show(null, 'logged out');
      })
      .catch(function (err) {
        page.show(null, 'logged out here; the server said ' + describe(err));
      });
  }
});
