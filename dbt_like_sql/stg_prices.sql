-- stg_prices: each ticker's latest bar as of the session (a missing session repeats the last bar, at
-- most 5 sessions old), with the bar as of the previous session: the basis of every price feature.
-- grain: daily
-- lookback: 6
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
        {
            'sess': s.sess, 'open': b.open, 'high': b.high, 'low': b.low, 'close': b.close,
            'adj_close': b.adj_close, 'volume': b.volume, 'source': b.source
        } AS bar
    FROM bars AS b
    JOIN window_sessions AS s USING (date)
),
cells AS (
    SELECT k.ticker, s.date, s.sess, b.bar
    FROM (SELECT DISTINCT ticker FROM numbered) AS k
    CROSS JOIN window_sessions AS s
    LEFT JOIN numbered AS b USING (ticker, sess)
),
-- The rows stream in (ticker, sess) order (order-preserving steps, checking that order): last_bar is the
-- ticker's latest bar so far, so the bar as of the session (at most 5 sessions old) is last_bar when that
-- recent, and the bar as of the previous session is the previous row's last_bar when at most 6 sessions old.
latest_bars AS (
    SELECT
        *,
        row_number() OVER stream AS pos,
        last_value(CASE WHEN bar IS NOT NULL THEN {'ticker': ticker, 'bar': bar} END IGNORE NULLS) OVER stream
            AS last_bar,
        CASE
            WHEN lag(ticker) OVER stream > ticker
                OR (lag(ticker) OVER stream = ticker AND lag(sess) OVER stream >= sess)
                THEN error('stg_prices: rows not in (ticker, sess) order at ' || ticker || ' ' || date)
        END AS sorted_check
    FROM (SELECT * FROM cells ORDER BY ticker, sess)
    WINDOW stream AS (ROWS UNBOUNDED PRECEDING)
),
as_of AS (
    SELECT
        date,
        ticker,
        sess,
        CASE WHEN last_bar.ticker = ticker AND last_bar.bar.sess >= sess - 5 THEN last_bar.bar END AS cur,
        CASE WHEN prev_bar.ticker = ticker AND prev_bar.bar.sess >= sess - 6 THEN prev_bar.bar END AS prev,
        checked
    FROM (
        SELECT
            *,
            lag(last_bar) OVER stream AS prev_bar,
            stream_check(pos, lag(pos) OVER stream, sorted_check, 'stg_prices') AS checked
        FROM latest_bars
        WINDOW stream AS (ROWS UNBOUNDED PRECEDING)
    )
)
SELECT
    date,
    ticker,
    cur.open,
    cur.high,
    cur.low,
    cur.close,
    cur.adj_close,
    coalesce(cur.adj_close, cur.close) AS tr_close,
    cur.volume,
    cur.source,
    CAST(sess - cur.sess AS INTEGER) AS stale_sessions,
    prev IS NOT NULL AS continues,
    prev.close AS prev_close,
    prev.high AS prev_high,
    prev.low AS prev_low,
    CASE
        WHEN cur.adj_close IS NOT NULL AND prev.adj_close IS NOT NULL THEN cur.adj_close / prev.adj_close - 1
        ELSE cur.close / prev.close - 1
    END AS ret_1d
FROM as_of
WHERE cur IS NOT NULL AND date IN (SELECT date FROM targets) AND checked
