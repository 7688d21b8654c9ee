// The console's two languages. The browser's language picks one (Chinese for zh-*, English
// otherwise) until the operator switches; the choice is remembered in localStorage.

const STRINGS = {
  en: {
    'title': 'wxauth console',
    'nav.dashboard': 'Dashboard', 'nav.users': 'Users', 'nav.audit': 'Audit log',
    'nav.signout': 'Sign out', 'lang.other': '中文',
    'signin.title': 'Sign in',
    'signin.help': 'Paste an admin key (wxauth gen-admin-key). It is kept in this tab only and sent to the admin API.',
    'signin.key': 'Admin key', 'signin.submit': 'Sign in',
    'signin.wrong': 'This admin key is not accepted.',
    'error.network': 'The service cannot be reached.',
    'error.generic': 'Error: {message}',
    'loading': 'Loading…',
    'dash.title': 'Dashboard',
    'dash.range': 'Range', 'dash.app': 'Mini program', 'dash.allApps': 'All mini programs',
    'dash.range.7d': 'Last 7 days', 'dash.range.30d': 'Last 30 days', 'dash.range.24h': 'Last 24 hours',
    'dash.refresh': 'Refresh',
    'dash.utc': 'Times are UTC buckets.',
    'tile.logins': 'Logins', 'tile.newPersons': 'New persons', 'tile.active': 'Active persons (last bucket)',
    'tile.failed': 'Failed logins', 'tile.failedShare': 'Failed share', 'tile.wechatCalls': 'WeChat calls',
    'tile.wechatErrors': 'WeChat errors',
    'chart.logins': 'Logins by mini program', 'chart.newPersons': 'New persons by mini program',
    'chart.failedShare': 'Share of logins that failed', 'chart.failedReasons': 'Failed logins by reason',
    'chart.errcodes': 'WeChat errcodes', 'chart.latency': 'WeChat latency (mean ms) by endpoint',
    'chart.empty': 'Nothing in this range.',
    'users.title': 'Users', 'users.by': 'Search by',
    'users.by.q': 'Nickname', 'users.by.phone': 'Phone number', 'users.by.openid': 'openid',
    'users.by.unionid': 'unionid', 'users.by.id': 'User id',
    'users.search': 'Search', 'users.none': 'No users found.', 'users.more': 'More',
    'col.id': 'Id', 'col.nickname': 'Nickname', 'col.phone': 'Phone', 'col.unionid': 'unionid',
    'col.created': 'Created', 'col.app': 'Mini program', 'col.openid': 'openid',
    'col.lastSeen': 'Last seen', 'col.expires': 'Expires', 'col.ip': 'IP', 'col.userAgent': 'User agent',
    'col.status': 'Status', 'col.time': 'Time', 'col.actor': 'Who', 'col.action': 'Action',
    'col.target': 'Target', 'col.detail': 'Detail', 'col.merged': 'Merged person', 'col.mergedAt': 'Merged',
    'user.title': 'User {id}', 'user.profile': 'Profile', 'user.identities': 'Identities',
    'user.sessions': 'Sessions', 'user.merges': 'Merged persons', 'user.back': '← Users',
    'user.revoke': 'Revoke', 'user.revokeAll': 'Revoke all sessions',
    'user.confirmRevoke': 'Revoke this session? Its tokens stop working at once.',
    'user.confirmRevokeAll': 'Revoke every live session of this user?',
    'user.revoked': 'Revoked {n} session(s).',
    'user.noSessions': 'No sessions.', 'user.noMerges': 'None.',
    'status.active': 'active', 'status.expired': 'expired', 'status.revoked': 'revoked: {reason}',
    'field.gender': 'Gender', 'field.city': 'City', 'field.province': 'Province', 'field.country': 'Country',
    'field.language': 'Language', 'field.updated': 'Updated', 'field.extra': 'App fields',
    'gender.0': 'unknown', 'gender.1': 'male', 'gender.2': 'female',
    'audit.title': 'Audit log', 'audit.none': 'No entries.', 'audit.more': 'Older entries',
  },
  zh: {
    'title': 'wxauth 控制台',
    'nav.dashboard': '概览', 'nav.users': '用户', 'nav.audit': '审计日志',
    'nav.signout': '退出', 'lang.other': 'English',
    'signin.title': '登录',
    'signin.help': '粘贴管理员密钥（wxauth gen-admin-key）。密钥只保存在当前标签页中，只发送给管理 API。',
    'signin.key': '管理员密钥', 'signin.submit': '登录',
    'signin.wrong': '此管理员密钥无效。',
    'error.network': '无法连接服务。',
    'error.generic': '出错：{message}',
    'loading': '加载中…',
    'dash.title': '概览',
    'dash.range': '时间范围', 'dash.app': '小程序', 'dash.allApps': '全部小程序',
    'dash.range.7d': '最近 7 天', 'dash.range.30d': '最近 30 天', 'dash.range.24h': '最近 24 小时',
    'dash.refresh': '刷新',
    'dash.utc': '时间按 UTC 分桶。',
    'tile.logins': '登录次数', 'tile.newPersons': '新用户', 'tile.active': '活跃用户（最近一个时段）',
    'tile.failed': '失败登录', 'tile.failedShare': '失败占比', 'tile.wechatCalls': '微信接口调用',
    'tile.wechatErrors': '微信接口错误',
    'chart.logins': '各小程序登录次数', 'chart.newPersons': '各小程序新用户',
    'chart.failedShare': '登录失败占比', 'chart.failedReasons': '登录失败原因',
    'chart.errcodes': '微信 errcode', 'chart.latency': '微信接口平均耗时（毫秒）',
    'chart.empty': '此范围内没有数据。',
    'users.title': '用户', 'users.by': '查找方式',
    'users.by.q': '昵称', 'users.by.phone': '手机号', 'users.by.openid': 'openid',
    'users.by.unionid': 'unionid', 'users.by.id': '用户 ID',
    'users.search': '查找', 'users.none': '没有找到用户。', 'users.more': '更多',
    'col.id': 'ID', 'col.nickname': '昵称', 'col.phone': '手机号', 'col.unionid': 'unionid',
    'col.created': '创建时间', 'col.app': '小程序', 'col.openid': 'openid',
    'col.lastSeen': '最近使用', 'col.expires': '到期', 'col.ip': 'IP', 'col.userAgent': 'User-Agent',
    'col.status': '状态', 'col.time': '时间', 'col.actor': '操作者', 'col.action': '操作',
    'col.target': '对象', 'col.detail': '详情', 'col.merged': '被合并的用户', 'col.mergedAt': '合并时间',
    'user.title': '用户 {id}', 'user.profile': '资料', 'user.identities': '身份',
    'user.sessions': '会话', 'user.merges': '合并记录', 'user.back': '← 用户',
    'user.revoke': '吊销', 'user.revokeAll': '吊销全部会话',
    'user.confirmRevoke': '吊销此会话？其令牌将立即失效。',
    'user.confirmRevokeAll': '吊销此用户的全部有效会话？',
    'user.revoked': '已吊销 {n} 个会话。',
    'user.noSessions': '没有会话。', 'user.noMerges': '无。',
    'status.active': '有效', 'status.expired': '已过期', 'status.revoked': '已吊销：{reason}',
    'field.gender': '性别', 'field.city': '城市', 'field.province': '省份', 'field.country': '国家',
    'field.language': '语言', 'field.updated': '更新时间', 'field.extra': '应用字段',
    'gender.0': '未知', 'gender.1': '男', 'gender.2': '女',
    'audit.title': '审计日志', 'audit.none': '没有记录。', 'audit.more': '更早的记录',
  },
};

const STORE_KEY = 'wxauth-console.lang';

function initial() {
  try {
    const chosen = localStorage.getItem(STORE_KEY);
    if (chosen === 'en' || chosen === 'zh') return chosen;
  } catch (_) { /* storage refused: follow the browser */ }
  const browser = (navigator.languages && navigator.languages[0]) || navigator.language || 'en';
  return browser.toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

let current = initial();

/** `en` or `zh`. */
export function lang() { return current; }

/** The BCP 47 tag of the language, for `<html lang>` and date formatting. */
export function locale() { return current === 'zh' ? 'zh-CN' : 'en'; }

/** Switches language and remembers the choice. */
export function setLang(next) {
  current = next === 'zh' ? 'zh' : 'en';
  try { localStorage.setItem(STORE_KEY, current); } catch (_) { /* not remembered */ }
}

/** The text of `key`, with `{name}` replaced from `vars`. */
export function t(key, vars) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : ''));
}
