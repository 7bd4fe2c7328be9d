-- seckill: the MySQL copy of the engine's state, written by the persister
-- from the WAL (see docs/PERSISTENCE.md). Times are DATETIME(3) in UTC.
-- Rows with in_engine = 0 in `products` / `activities` were prepared by an
-- operator in SQL and are loaded into the engine by the admin `warmup`.
-- Every statement must be safe to run twice: a crash mid-migration leaves it
-- marked unfinished, and `migrate` then runs it again (schema.rs).

CREATE TABLE IF NOT EXISTS products (
  id            BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  name          VARCHAR(1024) NOT NULL,
  description   TEXT NOT NULL,
  image_url     VARCHAR(1024) NOT NULL DEFAULT '',
  price_cents   BIGINT UNSIGNED NOT NULL,
  in_engine     TINYINT(1) NOT NULL DEFAULT 0,
  updated_lsn   BIGINT UNSIGNED NOT NULL DEFAULT 0,
  updated_at    DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS activities (
  id                BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  product_id        BIGINT UNSIGNED NOT NULL DEFAULT 0,
  product_name      VARCHAR(1024) NOT NULL DEFAULT '',
  title             VARCHAR(1024) NOT NULL,
  price_cents       BIGINT UNSIGNED NOT NULL,
  -- every token ever added (create + stock.add)
  total_stock       BIGINT UNSIGNED NOT NULL DEFAULT 0,
  -- total_stock minus units held by pending_payment / paid / shipped orders
  remaining         BIGINT NOT NULL DEFAULT 0,
  starts_at         DATETIME(3) NOT NULL,
  ends_at           DATETIME(3) NOT NULL,
  per_user_limit    INT UNSIGNED NOT NULL DEFAULT 1,
  payment_timeout_s INT UNSIGNED NOT NULL DEFAULT 1800,
  require_buy_token TINYINT(1) NOT NULL DEFAULT 0,
  gate_factor       INT UNSIGNED NOT NULL DEFAULT 5,
  status            VARCHAR(16) NOT NULL DEFAULT 'active',
  in_engine         TINYINT(1) NOT NULL DEFAULT 0,
  updated_lsn       BIGINT UNSIGNED NOT NULL DEFAULT 0,
  updated_at        DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  CONSTRAINT activities_status CHECK (status IN ('active', 'paused', 'disabled'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS orders (
  order_id        CHAR(36) CHARACTER SET ascii NOT NULL PRIMARY KEY,
  user_id         BIGINT UNSIGNED NOT NULL,
  activity_id     BIGINT UNSIGNED NOT NULL,
  quantity        INT UNSIGNED NOT NULL,
  amount_cents    BIGINT UNSIGNED NOT NULL,
  status          VARCHAR(16) NOT NULL,
  created_at      DATETIME(3) NOT NULL,
  pay_before      DATETIME(3) NOT NULL,
  -- hash of the payment transaction that paid it (0: unpaid)
  paid_txn        BIGINT UNSIGNED NOT NULL DEFAULT 0,
  -- hash of the buyer's Idempotency-Key (0: none)
  idempotency_key BIGINT UNSIGNED NOT NULL DEFAULT 0,
  updated_lsn     BIGINT UNSIGNED NOT NULL,
  updated_at      DATETIME(3) NOT NULL,
  KEY orders_by_user (user_id, created_at),
  KEY orders_by_activity (activity_id, status),
  CONSTRAINT orders_status CHECK (status IN ('pending_payment', 'paid', 'cancelled', 'expired', 'refunded', 'shipped'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Units each user holds in each activity (what counts against the limit).
CREATE TABLE IF NOT EXISTS purchases (
  user_id     BIGINT UNSIGNED NOT NULL,
  activity_id BIGINT UNSIGNED NOT NULL,
  `count`     INT NOT NULL,
  PRIMARY KEY (user_id, activity_id),
  KEY purchases_by_activity (activity_id)
) ENGINE=InnoDB;

-- Per-user limits that override per_user_limit (VIP, whitelist).
CREATE TABLE IF NOT EXISTS quotas (
  activity_id BIGINT UNSIGNED NOT NULL,
  user_id     BIGINT UNSIGNED NOT NULL,
  user_limit  INT UNSIGNED NOT NULL,
  updated_lsn BIGINT UNSIGNED NOT NULL DEFAULT 0,
  PRIMARY KEY (activity_id, user_id)
) ENGINE=InnoDB;

-- One row per stock change. reason: order (a buy took tokens), cancelled /
-- expired / refunded (tokens came back), stock.add, resync (MySQL rebuilt
-- from engine state; delta = the correction).
CREATE TABLE IF NOT EXISTS stock_log (
  id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  lsn         BIGINT UNSIGNED NOT NULL,
  activity_id BIGINT UNSIGNED NOT NULL,
  delta       BIGINT NOT NULL,
  reason      VARCHAR(16) NOT NULL,
  order_id    CHAR(36) CHARACTER SET ascii NULL,
  at          DATETIME(3) NOT NULL,
  KEY stock_log_by_activity (activity_id, lsn),
  KEY stock_log_by_lsn (lsn)
) ENGINE=InnoDB;

-- Money that arrived for an order that could not take it, for reconciliation.
CREATE TABLE IF NOT EXISTS payment_refusals (
  lsn          BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  order_id     CHAR(36) CHARACTER SET ascii NOT NULL,
  amount_cents BIGINT UNSIGNED NOT NULL,
  txn          BIGINT UNSIGNED NOT NULL,
  at           DATETIME(3) NOT NULL,
  KEY payment_refusals_by_order (order_id)
) ENGINE=InnoDB;

-- The last WAL record applied, written in the same transaction as the
-- record's effects. One row. Set resync_requested = 1 to make the persister
-- rebuild MySQL from the engine's state.
CREATE TABLE IF NOT EXISTS persist_checkpoint (
  id               TINYINT UNSIGNED NOT NULL PRIMARY KEY,
  lsn              BIGINT UNSIGNED NOT NULL,
  resync_requested TINYINT(1) NOT NULL DEFAULT 0,
  updated_at       DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  CONSTRAINT persist_checkpoint_one_row CHECK (id = 1)
) ENGINE=InnoDB;

INSERT IGNORE INTO persist_checkpoint (id, lsn) VALUES (1, 0);
