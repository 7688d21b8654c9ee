'use strict';
// The example mini program (examples/miniprogram), run under Node in simulator mode against the
// real wxauth binary: App/Page/getApp are minimal stand-ins, `wx` is the test stand-in, and the
// page's handlers are called as the buttons would call them.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { startStack } = require('./support/stack.js');
const { createWx } = require('./support/wx.js');

const EXAMPLE = path.resolve(__dirname, '..', '..', '..', 'examples', 'miniprogram');
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
  'base64'
);

let stack;
let env;
let page;

/** Loads app.js and the index page the way the mini-program runtime would, once. */
function launch() {
  let appDef = null;
  let pageDef = null;
  global.wx = env.wx;
  global.App = (def) => {
    appDef = def;
  };
  global.getApp = () => appDef;
  global.Page = (def) => {
    pageDef = def;
  };
  const config = require(path.join(EXAMPLE, 'config.js'));
  Object.assign(config, { baseUrl: stack.baseUrl, simUrl: stack.simUrl, appId: stack.appId, simUser: 'example-user' });
  require(path.join(EXAMPLE, 'app.js'));
  appDef.onLaunch();
  require(path.join(EXAMPLE, 'pages', 'index', 'index.js'));
  const instance = Object.assign(Object.create(pageDef), {
    data: JSON.parse(JSON.stringify(pageDef.data)),
    setData(patch) {
      Object.assign(this.data, patch);
    },
  });
  instance.onLoad({});
  return instance;
}

before(async () => {
  stack = await startStack({ accessTtl: '1h' });
  env = createWx({ simUrl: stack.simUrl, appId: stack.appId, user: 'unused: the example plays its own user' });
  page = launch();
});

after(async () => {
  for (const name of ['wx', 'App', 'getApp', 'Page']) delete global[name];
  if (stack) await stack.stop();
});

test('the example logs in through the simulator and shows who I am', async () => {
  assert.equal(page.data.simMode, true);
  assert.equal(page.data.loggedIn, false);

  await page.onLogin();
  assert.match(page.data.status, /^logged in/);
  assert.equal(page.data.loggedIn, true);
  assert.equal(page.data.me.app_id, stack.appId);

  await page.whoAmI();
  assert.equal(page.data.status, 'this is you');
  assert.match(page.data.meJson, /"openid"/);
});

test('the example saves the nickname typed into the nickname input', async () => {
  await page.onSaveNickname({ detail: { value: { nickname: ' 小明😀 ' } } });
  assert.equal(page.data.status, 'nickname saved', page.data.status);
  assert.equal(page.data.me.nickname, '小明😀');
});

test('the example uploads the avatar chosen with the chooseAvatar button', async () => {
  const file = path.join(stack.dir, 'chosen.png');
  fs.writeFileSync(file, PNG);
  await page.onChooseAvatar({ detail: { avatarUrl: file } });
  assert.equal(page.data.status, 'avatar saved', page.data.status);
  assert.equal(typeof page.data.me.avatar_url, 'string');
});

test('the example binds the phone from the getPhoneNumber button', async () => {
  await page.onGetPhoneNumber({ detail: { errMsg: 'getPhoneNumber:fail no permission' } });
  assert.equal(page.data.status, 'phone bound', page.data.status);
  assert.ok(page.data.me.phone, 'the user now has a phone');
});

test('the example logs out', async () => {
  await page.onLogout();
  assert.equal(page.data.status, 'logged out');
  assert.equal(page.data.loggedIn, false);
  assert.equal(page.data.me, null);
});
