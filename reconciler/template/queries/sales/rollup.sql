-- Saved query sales.rollup: resolved at dispatch, so an edit reaches the next run of
-- every job that uses it. $day is bound from the run's arguments.
CREATE TABLE IF NOT EXISTS sales_daily (day VARCHAR, orders BIGINT, revenue DOUBLE);
DELETE FROM sales_daily WHERE day = $day;
INSERT INTO sales_daily
SELECT $day AS day, count(*) AS orders, sum(i * 1.5) AS revenue FROM range(100) AS t(i);
SELECT * FROM sales_daily WHERE day = $day;
