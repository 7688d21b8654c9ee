-- The keys that sign JWT access tokens, shared by every instance. The private key is sealed
-- with the data key; the public half is kept as the JWK that /.well-known/jwks.json publishes.
-- The key with the highest generation is the current one; older keys stay published until
-- retire_after (NULL while current). The unique generation makes two instances that create a
-- key at the same moment agree on one: the second insert fails and that instance re-reads.
CREATE TABLE signing_keys (
    kid           TEXT    PRIMARY KEY,
    generation    BIGINT  NOT NULL UNIQUE,
    algorithm     TEXT    NOT NULL,
    private_key   TEXT    NOT NULL,
    public_jwk    TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    retire_after  BIGINT
);
