-- stg_prices: each ticker's latest bar as of the session (a missing session repeats the last bar, at
-- most 5 sessions old), with the bar as of the previous session: the basis of every price feature.
-- grain: daily
-- lookback: 6
-- per_ticker: true
--
-- close is split-adjusted (as every source delivers it); tr_close, the total-return price, is adj_close
-- where the source has it, else close. ret_1d uses adj_close when both bars have one, else close, so a
-- ticker whose bars come from different sources never mixes the two bases. stale_sessions is 0 when the
-- ticker has a bar dated on the session itself. continues says the ticker also had a row (a bar at most
-- 5 sessions old) on the previous session. Sessions are the NYSE calendar's, so a day without any data
-- is a missing session like any other.
WITH bars AS (
    SELECT
        CAST(date AS DATE) AS date,
        ticker,
        CAST(open AS DOUBLE) AS open,
        CAST(high AS DOUBLE) AS high,
        CAST(low AS DOUBLE) AS low,
        CAST(close AS DOUBLE) AS close,
        CAST(adj_close AS DOUBLE) AS adj_close,
        CAST(volume AS DOUBLE) AS volume,
        source
    FROM {{ ref('raw_ohlcv') }}
),
targets AS (
    SELECT s.date, s.sess
    FROM {{ sessions }} AS s
    JOIN {{ target_dates }} AS t ON s.date = CAST(t.date AS DATE)
),
window_sessions AS (
    SELECT date, sess
    FROM {{ sessions }}
    WHERE sess BETWEEN (SELECT min(sess) - {{ lookback }} FROM targets) AND (SELECT max(sess) FROM targets)
),
numbered AS (
    SELECT
        b.ticker,
        s.sess,
        date,
        {
            'sess': s.sess, 'open': b.open, 'high': b.high, 'low': b.low, 'close': b.close,
            'adj_close': b.adj_close, 'volume': b.volume, 'source': b.source
        } AS bar
    FROM bars AS b
    JOIN window_sessions AS s USING (date)
),
-- Each bar is the bar as of its own session and of the sessions after it (age k, at most 5) until the
-- ticker's next bar: the next bar only ends the fill, so no value for a session uses a bar dated after it.
-- The bar as of the previous session is this bar on a filled session (k > 0), else the ticker's previous bar
-- in the window when at most 6 sessions old. Only sessions that have a bar at most 5 sessions old get a
-- row, so no ticker x session grid is built.
spans AS (
    SELECT
        ticker,
        sess,
        bar,
        lag(bar) OVER ticker_bars AS prev_bar,
        CASE
            WHEN lead(sess) OVER ticker_bars = sess
                THEN error('stg_prices: two bars for ' || ticker || ' dated ' || date)
            ELSE coalesce(lead(sess) OVER ticker_bars, sess + 6)
        END AS next_sess
    FROM numbered
    WINDOW ticker_bars AS (PARTITION BY ticker ORDER BY sess)
),
as_of AS (
    SELECT
        ticker,
        sess + k AS sess,
        k,
        bar AS cur,
        CASE WHEN k > 0 THEN bar WHEN prev_bar.sess >= bar.sess - 6 THEN prev_bar END AS prev
    FROM (SELECT *, unnest(range(least(next_sess - sess, 6))) AS k FROM spans)
)
SELECT
    t.date,
    a.ticker,
    cur.open,
    cur.high,
    cur.low,
    cur.close,
    cur.adj_close,
    coalesce(cur.adj_close, cur.close) AS tr_close,
    cur.volume,
    cur.source,
    CAST(k AS INTEGER) AS stale_sessions,
    prev IS NOT NULL AS continues,
    prev.close AS prev_close,
    prev.high AS prev_high,
    prev.low AS prev_low,
    CASE
        WHEN cur.adj_close IS NOT NULL AND prev.adj_close IS NOT NULL THEN cur.adj_close / prev.adj_close - 1
        ELSE cur.close / prev.close - 1
    END AS ret_1d
FROM as_of AS a
JOIN targets AS t USING (sess)
