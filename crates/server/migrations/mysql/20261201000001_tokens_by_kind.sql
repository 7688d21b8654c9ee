-- A session's tokens by kind: a rotation finds the session's access tokens among its tokens
-- directly, instead of visiting every used refresh token the session keeps until it expires.
-- One statement: the foreign key on session_id always has an index to use.
ALTER TABLE tokens ADD KEY tokens_session_kind (session_id, kind, expires_at), DROP KEY tokens_session_id;
