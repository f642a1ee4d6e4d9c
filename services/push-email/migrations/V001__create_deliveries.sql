-- The delivery log of push-email: one row per intended email, keyed by the SHA-256 of its
-- dedupe key (binlog position of the event + notification kind + recipient), so that a
-- re-delivered event never mails a person twice. Applied by shared/db.c
-- (db_migrations_apply) into the database `notifications`.
CREATE TABLE IF NOT EXISTS deliveries (
  key_hash BINARY(32) NOT NULL,
  dedupe_key VARCHAR(512) NOT NULL,
  kind VARCHAR(64) NOT NULL,
  recipient VARCHAR(320) NOT NULL,
  state ENUM('pending', 'sent', 'failed') NOT NULL DEFAULT 'pending',
  attempts INT UNSIGNED NOT NULL DEFAULT 0,
  last_error VARCHAR(512) NULL,
  created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  sent_at DATETIME(6) NULL,
  PRIMARY KEY (key_hash),
  KEY ix_deliveries_state_updated (state, updated_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
