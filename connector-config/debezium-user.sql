-- The Debezium connector's own database user, least privilege (MariaDB 10.5+ and MySQL 8).
-- Idempotent: run it again and nothing changes (the password is set to the given one).
--
-- The caller sets the password (never stored in this file) and may narrow the host:
--   SET @debezium_password = '...';   -- required
--   SET @debezium_host = '%';         -- optional, default '%'; e.g. '10.%' or 'localhost'
-- then runs this file in the same session, as a user that may create users and grant:
--   { echo "SET @debezium_password = '$PW';"; cat debezium-user.sql; } | mariadb -uroot
--
-- Privileges (Debezium's MariaDB/MySQL connector docs, "Creating a user"):
--   SELECT             the initial snapshot reads the captured table. Granted on
--                      userdata.* only, not *.*. (Not on userdata.users: a table grant
--                      fails while the table does not exist yet, and the table is made
--                      by userdata's migrations, which may run after this file.)
--   RELOAD             FLUSH TABLES WITH READ LOCK for a consistent snapshot
--   SHOW DATABASES     the snapshot lists databases
--   REPLICATION SLAVE  read the binlog (the connector registers as a replica)
--   REPLICATION CLIENT SHOW MASTER/BINLOG STATUS, SHOW BINARY LOGS. On MariaDB >= 10.5.2
--                      REPLICATION CLIENT is an alias of BINLOG MONITOR, which is what SHOW
--                      GRANTS then prints; nothing else is needed (verified against
--                      MariaDB 10.11 with the connector streaming). REPLICATION SLAVE ADMIN
--                      (START/STOP SLAVE, CHANGE MASTER) is NOT needed: the connector only
--                      reads the binlog, it never administers replication.
-- No INSERT/UPDATE/DELETE/DDL anywhere; not root.
SET @dbz_host = COALESCE(@debezium_host, '%');
SET @dbz_sql = CONCAT('CREATE USER IF NOT EXISTS ''debezium''@', QUOTE(@dbz_host),
                      ' IDENTIFIED BY ', QUOTE(@debezium_password));
PREPARE dbz_stmt FROM @dbz_sql;
EXECUTE dbz_stmt;
DEALLOCATE PREPARE dbz_stmt;
SET @dbz_sql = CONCAT('ALTER USER ''debezium''@', QUOTE(@dbz_host),
                      ' IDENTIFIED BY ', QUOTE(@debezium_password));
PREPARE dbz_stmt FROM @dbz_sql;
EXECUTE dbz_stmt;
DEALLOCATE PREPARE dbz_stmt;
SET @dbz_sql = CONCAT('GRANT RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT',
                      ' ON *.* TO ''debezium''@', QUOTE(@dbz_host));
PREPARE dbz_stmt FROM @dbz_sql;
EXECUTE dbz_stmt;
DEALLOCATE PREPARE dbz_stmt;
SET @dbz_sql = CONCAT('GRANT SELECT ON userdata.* TO ''debezium''@', QUOTE(@dbz_host));
PREPARE dbz_stmt FROM @dbz_sql;
EXECUTE dbz_stmt;
DEALLOCATE PREPARE dbz_stmt;
