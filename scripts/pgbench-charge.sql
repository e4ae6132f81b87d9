-- The minimal equivalent of a charge, for pgbench (scripts/bench-postgres.sh):
-- one conditional update of a token's spend, the charge and its two ledger
-- entries, in one transaction.
\set token random(1, 1000)
BEGIN;
UPDATE scrip_pgbench.tokens SET spent = spent + 1 WHERE id = :token AND spent + 1 <= cap;
INSERT INTO scrip_pgbench.charges (token, amount) VALUES (:token, 1);
INSERT INTO scrip_pgbench.entries (account, amount) VALUES ('card_receivable', 1), ('provider_pending', -1);
END;
