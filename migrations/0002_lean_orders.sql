-- seckill: one row per order (docs/PERSISTENCE.md, "Rows and indexes per order").
--
-- Before: each order wrote three rows (`orders` with 2 secondary indexes,
-- `purchases` upserted, `stock_log` with an auto-increment key and 2
-- indexes). After: one `orders` row with 1 secondary index; `purchases` is a
-- view over `orders`; `stock_log` gets one row per batch, activity and
-- reason (`first_lsn`..`lsn`, `records` changes folded in).
--
-- Upgrades a database in place and loses nothing: `purchases` only ever held
-- sums of `orders` rows, old `stock_log` rows stay as they are (one change
-- each: `records` = 1). Every statement must be safe to run twice (a crash
-- mid-migration makes `migrate` run it again, schema.rs), and must run on
-- MySQL 8 as well as MariaDB: no `IF [NOT] EXISTS` on columns and indexes,
-- so each change asks information_schema first.

-- orders: `orders_by_activity (activity_id, status)` served no query of the
-- project; reports per activity scan `orders` (one sale is most of it anyway).
SET @s = (SELECT IF(COUNT(*) > 0, 'ALTER TABLE orders DROP INDEX orders_by_activity', 'DO 0')
          FROM information_schema.statistics
          WHERE table_schema = DATABASE() AND table_name = 'orders' AND index_name = 'orders_by_activity');
PREPARE st FROM @s;
EXECUTE st;
DEALLOCATE PREPARE st;

-- purchases: derived from the orders that hold stock. Same columns as the
-- table it replaces (user_id, activity_id, count); `orders_by_user` serves
-- a lookup by user.
SET @s = (SELECT IF(COUNT(*) > 0, 'DROP TABLE purchases', 'DO 0')
          FROM information_schema.tables
          WHERE table_schema = DATABASE() AND table_name = 'purchases' AND table_type = 'BASE TABLE');
PREPARE st FROM @s;
EXECUTE st;
DEALLOCATE PREPARE st;

-- SQL SECURITY INVOKER: readers need SELECT on `orders`, and the view does not
-- depend on the account that ran the migration still existing.
CREATE OR REPLACE SQL SECURITY INVOKER VIEW purchases AS
  SELECT user_id, activity_id, CAST(SUM(quantity) AS SIGNED) AS `count`
  FROM orders
  WHERE status IN ('pending_payment', 'paid', 'shipped')
  GROUP BY user_id, activity_id;

-- stock_log: a row now stands for `records` changes of one reason to one
-- activity, LSNs `first_lsn`..`lsn` (order_id only when records = 1).
SET @s = (SELECT IF(COUNT(*) = 0,
                    'ALTER TABLE stock_log ADD COLUMN first_lsn BIGINT UNSIGNED NULL AFTER lsn', 'DO 0')
          FROM information_schema.columns
          WHERE table_schema = DATABASE() AND table_name = 'stock_log' AND column_name = 'first_lsn');
PREPARE st FROM @s;
EXECUTE st;
DEALLOCATE PREPARE st;

SET @s = (SELECT IF(COUNT(*) = 0,
                    'ALTER TABLE stock_log ADD COLUMN records INT UNSIGNED NOT NULL DEFAULT 1 AFTER delta', 'DO 0')
          FROM information_schema.columns
          WHERE table_schema = DATABASE() AND table_name = 'stock_log' AND column_name = 'records');
PREPARE st FROM @s;
EXECUTE st;
DEALLOCATE PREPARE st;

UPDATE stock_log SET first_lsn = lsn WHERE first_lsn IS NULL;

-- `stock_log_by_lsn` served no query; `stock_log_by_activity (activity_id,
-- lsn)` stays: an activity's stock history, and the SUM(delta) check.
SET @s = (SELECT IF(COUNT(*) > 0, 'ALTER TABLE stock_log DROP INDEX stock_log_by_lsn', 'DO 0')
          FROM information_schema.statistics
          WHERE table_schema = DATABASE() AND table_name = 'stock_log' AND index_name = 'stock_log_by_lsn');
PREPARE st FROM @s;
EXECUTE st;
DEALLOCATE PREPARE st;
