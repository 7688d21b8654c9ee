-- Lets the purge find idle sessions by index instead of scanning every session.
CREATE INDEX sessions_last_seen_at ON sessions (last_seen_at);
