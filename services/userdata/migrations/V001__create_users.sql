-- V001: the users table (DESIGN.md section 3).
--
-- Format read by src/datasources/migrations.c: statements end with ';' at the end of a
-- line; lines starting with '--' are comments. No DELIMITER, no ';' inside a line's end
-- that is not a statement end. A file, once applied, must never change (its SHA-256 is
-- recorded in schema_migrations): add a new V<NNN>__*.sql instead.
--
-- Collation: text columns are utf8mb4 with utf8mb4_unicode_ci, so the unique keys on
-- username and email are case-insensitive ('Alice' and 'alice' are the same account, as
-- are 'Bob@Example.org' and 'bob@example.org'); the case a person typed is still stored
-- and returned as given. Sizes are in characters (utf8mb4: up to 4 bytes each) and match
-- the limits in src/entities/user.h. id is ASCII (a lower-case UUID) with a
-- case-insensitive collation, so that an upper-case id in a URL finds its row; for
-- lower-case hex the order is the byte order, which keyset pagination relies on.
--
-- The unique key names uq_users_username and uq_users_email are part of the contract
-- with mariadb_user_repo.c, which maps "Duplicate entry ... for key '<name>'" to
-- DUPLICATE_USERNAME / DUPLICATE_EMAIL.
CREATE TABLE IF NOT EXISTS users (
    id                  CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
    username            VARCHAR(32) NOT NULL,
    email               VARCHAR(254) NOT NULL,
    password_hash       VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    password_changed_at DATETIME(6) NULL,
    full_name           VARCHAR(200) NULL,
    date_of_birth       DATE NULL,
    address             VARCHAR(500) NULL,
    locale              VARCHAR(35) NOT NULL DEFAULT 'en',
    status              ENUM('UNCONFIRMED', 'CONFIRMED') NOT NULL DEFAULT 'UNCONFIRMED',
    created_at          DATETIME(6) NOT NULL,
    updated_at          DATETIME(6) NOT NULL,
    version             BIGINT UNSIGNED NOT NULL DEFAULT 1,
    PRIMARY KEY (id),
    UNIQUE KEY uq_users_username (username),
    UNIQUE KEY uq_users_email (email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
