-- A session's tokens by kind: a rotation finds the session's access tokens among its tokens
-- directly, instead of visiting every used refresh token the session keeps until it expires.
CREATE INDEX tokens_session_kind ON tokens (session_id, kind, expires_at);
DROP INDEX tokens_session_id;
