# shellcheck shell=bash
# Sourced (not executed: the ConfigMap file has no x bit) by the mariadb image's
# entrypoint on the FIRST start only (empty data dir), after it created the database
# MARIADB_DATABASE=userdata and the user MARIADB_USER=userdata (ALL on userdata.*).
# Adds push-email's delivery-log database and user, and Debezium's least-privilege user
# with connector-config/debezium-user.sql (mounted from that very file). Passwords come
# from the mounted Secret, never from this file.
cdc_sql_quote() {
    local s=${1//\\/\\\\}
    printf "'%s'" "${s//\'/\'\'}"
}
cdc_dbz_pw="$(cat /run/secrets/mariadb/debezium-password)"
cdc_pe_pw="$(cat /run/secrets/mariadb/push-email-password)"
{
    echo "CREATE DATABASE IF NOT EXISTS notifications CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
    echo "CREATE USER IF NOT EXISTS 'push_email'@'%' IDENTIFIED BY $(cdc_sql_quote "$cdc_pe_pw");"
    echo "GRANT ALL PRIVILEGES ON notifications.* TO 'push_email'@'%';"
    echo "SET @debezium_password = $(cdc_sql_quote "$cdc_dbz_pw");"
    echo "SET @debezium_host = '%';"
    cat /etc/cdc/debezium-user.sql
} | docker_process_sql
unset cdc_dbz_pw cdc_pe_pw
