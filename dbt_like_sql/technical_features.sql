-- technical_features: the 15 price and volume features of each stock on the day, raw (not yet normalised).
-- grain: daily
-- lookback: 199
-- per_ticker: true
--
-- Windows are finite, counted in sessions over stg_prices rows (where a missing session already repeats
-- the last bar, at most 5 sessions). A statistic needs its whole window inside the ticker's current run of
-- consecutive rows, else it is missing (NULL); values that need the previous bar (returns, true range,
-- gains, directional moves) need one more session. No exponential average is used: RSI, ATR and ADX
-- average over their period (Cutler / simple variants) and MACD is built from simple averages, so a day
-- depends only on its own window, never on where the history starts.
-- Determinism: window sums go through to_fixed/from_fixed (exact integer sums, see macros/fixed_point.sql),
-- taken as differences of running sums over the rows streamed in (ticker, sess) order (window_sum there);
-- CCI's mean and mean deviation add the window's 20 values in a fixed order, oldest first.
WITH targets AS (
    SELECT s.date, s.sess
    FROM {{ sessions }} AS s
    JOIN {{ target_dates }} AS t ON s.date = CAST(t.date AS DATE)
),
bars AS (
    SELECT
        p.ticker,
        s.sess,
        p.date,
        p.close,
        p.adj_close,
        p.ret_1d,
        p.stale_sessions,
        CASE WHEN NOT p.continues THEN s.sess END AS run_break,
        (p.high + p.low + p.close) / 3 AS typical,
        ln(1 + p.volume) AS log_volume,
        -- needing the previous bar: on a run's first row these never enter a complete window
        greatest(p.high - p.low, abs(p.high - p.prev_close), abs(p.low - p.prev_close)) AS true_range,
        greatest(p.close - p.prev_close, 0) AS gain,
        greatest(p.prev_close - p.close, 0) AS loss,
        CASE
            WHEN p.high - p.prev_high > p.prev_low - p.low AND p.high - p.prev_high > 0 THEN p.high - p.prev_high
            ELSE 0
        END AS plus_dm,
        CASE
            WHEN p.prev_low - p.low > p.high - p.prev_high AND p.prev_low - p.low > 0 THEN p.prev_low - p.low
            ELSE 0
        END AS minus_dm
    FROM {{ ref('stg_prices') }} AS p
    JOIN {{ sessions }} AS s USING (date)
    WHERE s.sess >= (SELECT min(sess) - {{ lookback }} FROM targets)
        AND p.ticker IN (SELECT ticker FROM {{ ref('stg_prices') }} WHERE date IN (SELECT date FROM targets))
),
-- The windows run over the rows streamed in (ticker, sess) order (order-preserving steps, each checking
-- that the rows still come in that order): pos numbers the stream. c_* is the running sum of to_fixed
-- values and n_* the running count of non-NULL values since the first row read; a window's sum is the
-- difference of running sums k rows apart (window_sum, macros/fixed_point.sql). A window or lag reaching
-- back past the ticker's current run mixes in other rows, so every value is used only once its row is far
-- enough into the run (the run >= ... conditions below).
streamed AS (
    SELECT
        *,
        row_number() OVER stream AS pos,
        lag(ticker) OVER stream AS prev_ticker,
        lag(sess) OVER stream AS prev_sess,
        lag(close, 5) OVER stream AS close_5,
        lag(adj_close, 5) OVER stream AS adj_5,
        lag(close, 21) OVER stream AS close_21,
        lag(adj_close, 21) OVER stream AS adj_21,
        lag(close, 63) OVER stream AS close_63,
        lag(adj_close, 63) OVER stream AS adj_63,
        -- the mean of the last 20 typical prices, added oldest first
        (
            lag(typical, 19) OVER stream + lag(typical, 18) OVER stream + lag(typical, 17) OVER stream
            + lag(typical, 16) OVER stream + lag(typical, 15) OVER stream + lag(typical, 14) OVER stream
            + lag(typical, 13) OVER stream + lag(typical, 12) OVER stream + lag(typical, 11) OVER stream
            + lag(typical, 10) OVER stream + lag(typical, 9) OVER stream + lag(typical, 8) OVER stream
            + lag(typical, 7) OVER stream + lag(typical, 6) OVER stream + lag(typical, 5) OVER stream
            + lag(typical, 4) OVER stream + lag(typical, 3) OVER stream + lag(typical, 2) OVER stream
            + lag(typical, 1) OVER stream + typical
        ) / 20 AS mean_typical_20,
        sum(coalesce(to_fixed(ret_1d), 0)) OVER stream AS c_ret,
        count(ret_1d) OVER stream AS n_ret,
        sum(coalesce(to_fixed(ret_1d * ret_1d), 0)) OVER stream AS c_ret2,
        sum(coalesce(to_fixed(gain), 0)) OVER stream AS c_gain,
        count(gain) OVER stream AS n_gain,
        sum(coalesce(to_fixed(loss), 0)) OVER stream AS c_loss,
        count(loss) OVER stream AS n_loss,
        sum(coalesce(to_fixed(true_range), 0)) OVER stream AS c_tr,
        count(true_range) OVER stream AS n_tr,
        sum(coalesce(to_fixed(plus_dm), 0)) OVER stream AS c_pdm,
        count(plus_dm) OVER stream AS n_pdm,
        sum(coalesce(to_fixed(minus_dm), 0)) OVER stream AS c_mdm,
        count(minus_dm) OVER stream AS n_mdm,
        sum(coalesce(to_fixed(close), 0)) OVER stream AS c_close,
        count(close) OVER stream AS n_close,
        sum(coalesce(to_fixed(close * close), 0)) OVER stream AS c_close2,
        sum(coalesce(to_fixed(log_volume), 0)) OVER stream AS c_vol,
        count(log_volume) OVER stream AS n_vol,
        sum(coalesce(to_fixed(log_volume * log_volume), 0)) OVER stream AS c_vol2
    FROM (SELECT * FROM bars ORDER BY ticker, sess)
    WINDOW stream AS (ROWS UNBOUNDED PRECEDING)
),
windows AS (
    SELECT
        *,
        -- start of the ticker's current run of consecutive sessions (the first session read when the run
        -- began earlier)
        last_value(
            CASE
                WHEN prev_ticker IS DISTINCT FROM ticker OR run_break IS NOT NULL
                    THEN coalesce(run_break, (SELECT min(sess) - {{ lookback }} FROM targets))
            END IGNORE NULLS
        ) OVER stream AS run_start,
        lag(pos) OVER stream AS prev_pos,
        -- CCI's mean deviation of the last 20 typical prices from their mean, added oldest first
        (
            abs(lag(typical, 19) OVER stream - mean_typical_20) + abs(lag(typical, 18) OVER stream - mean_typical_20)
            + abs(lag(typical, 17) OVER stream - mean_typical_20) + abs(lag(typical, 16) OVER stream - mean_typical_20)
            + abs(lag(typical, 15) OVER stream - mean_typical_20) + abs(lag(typical, 14) OVER stream - mean_typical_20)
            + abs(lag(typical, 13) OVER stream - mean_typical_20) + abs(lag(typical, 12) OVER stream - mean_typical_20)
            + abs(lag(typical, 11) OVER stream - mean_typical_20) + abs(lag(typical, 10) OVER stream - mean_typical_20)
            + abs(lag(typical, 9) OVER stream - mean_typical_20) + abs(lag(typical, 8) OVER stream - mean_typical_20)
            + abs(lag(typical, 7) OVER stream - mean_typical_20) + abs(lag(typical, 6) OVER stream - mean_typical_20)
            + abs(lag(typical, 5) OVER stream - mean_typical_20) + abs(lag(typical, 4) OVER stream - mean_typical_20)
            + abs(lag(typical, 3) OVER stream - mean_typical_20) + abs(lag(typical, 2) OVER stream - mean_typical_20)
            + abs(lag(typical, 1) OVER stream - mean_typical_20) + abs(typical - mean_typical_20)
        ) / 20 AS mean_dev_20,
        window_sum(c_ret, lag(c_ret, 21) OVER stream, n_ret, lag(n_ret, 21) OVER stream) AS s_ret,
        window_sum(c_ret2, lag(c_ret2, 21) OVER stream, n_ret, lag(n_ret, 21) OVER stream) AS s_ret2,
        window_sum(c_gain, lag(c_gain, 14) OVER stream, n_gain, lag(n_gain, 14) OVER stream) AS s_gain,
        window_sum(c_loss, lag(c_loss, 14) OVER stream, n_loss, lag(n_loss, 14) OVER stream) AS s_loss,
        window_sum(c_tr, lag(c_tr, 14) OVER stream, n_tr, lag(n_tr, 14) OVER stream) AS s_tr,
        window_sum(c_pdm, lag(c_pdm, 14) OVER stream, n_pdm, lag(n_pdm, 14) OVER stream) AS s_pdm,
        window_sum(c_mdm, lag(c_mdm, 14) OVER stream, n_mdm, lag(n_mdm, 14) OVER stream) AS s_mdm,
        window_sum(c_close, lag(c_close, 12) OVER stream, n_close, lag(n_close, 12) OVER stream) AS s_12,
        window_sum(c_close, lag(c_close, 26) OVER stream, n_close, lag(n_close, 26) OVER stream) AS s_26,
        window_sum(c_close, lag(c_close, 20) OVER stream, n_close, lag(n_close, 20) OVER stream) AS s_20,
        window_sum(c_close2, lag(c_close2, 20) OVER stream, n_close, lag(n_close, 20) OVER stream) AS s2_20,
        window_sum(c_close, lag(c_close, 50) OVER stream, n_close, lag(n_close, 50) OVER stream) AS s_50,
        window_sum(c_close, lag(c_close, 200) OVER stream, n_close, lag(n_close, 200) OVER stream) AS s_200,
        window_sum(c_vol, lag(c_vol, 21) OVER stream, n_vol, lag(n_vol, 21) OVER stream) AS s_vol,
        window_sum(c_vol2, lag(c_vol2, 21) OVER stream, n_vol, lag(n_vol, 21) OVER stream) AS s_vol2
    FROM (
        SELECT
            *,
            CASE
                WHEN pos > 1 AND (prev_ticker > ticker OR (prev_ticker = ticker AND prev_sess >= sess))
                    THEN error(
                        'technical_features: rows not in (ticker, sess) order at '
                        || ticker || ' ' || date)
            END AS sorted_check
        FROM streamed
    )
    WINDOW stream AS (ROWS UNBOUNDED PRECEDING)
),
-- per-day lines averaged again: the MACD line and ADX's directional index (sum of TR cancels in DX)
lines AS (
    SELECT
        *,
        CASE WHEN run >= 26 THEN (s_12 / 12 - s_26 / 26) / close END AS macd,
        CASE WHEN run >= 15 THEN coalesce(100 * abs(s_pdm - s_mdm) / nullif(s_pdm + s_mdm, 0), 0) END AS dx
    FROM (
        SELECT
            *,
            sess - run_start + 1 AS run,
            stream_check(pos, prev_pos, sorted_check, 'technical_features') AS checked
        FROM windows
    )
),
lines_running AS (
    SELECT
        *,
        sum(coalesce(to_fixed(macd), 0)) OVER stream AS c_macd,
        count(macd) OVER stream AS n_macd,
        sum(coalesce(to_fixed(dx), 0)) OVER stream AS c_dx,
        count(dx) OVER stream AS n_dx,
        lag(pos) OVER stream AS lines_prev_pos
    FROM lines
    WINDOW stream AS (ROWS UNBOUNDED PRECEDING)
),
smoothed AS (
    SELECT
        *,
        window_sum(c_macd, lag(c_macd, 9) OVER stream, n_macd, lag(n_macd, 9) OVER stream) AS s_macd,
        window_sum(c_dx, lag(c_dx, 14) OVER stream, n_dx, lag(n_dx, 14) OVER stream) AS s_dx,
        stream_check(pos, lines_prev_pos, checked, 'technical_features')
            AND stream_check(pos, lag(pos) OVER stream, checked, 'technical_features') AS lines_checked
    FROM lines_running
    WINDOW stream AS (ROWS UNBOUNDED PRECEDING)
),
today AS (
    SELECT
        *,
        sqrt(greatest(s2_20 / 20 - (s_20 / 20) * (s_20 / 20), 0)) AS std_20,
        sqrt(greatest((s_vol2 - s_vol * s_vol / 21) / 20, 0)) AS std_vol
    FROM smoothed
    WHERE sess IN (SELECT sess FROM targets) AND lines_checked
)
SELECT
    date,
    ticker,
    close,
    stale_sessions,
    CASE WHEN run >= 2 THEN ret_1d END AS ret_1d,
    CASE WHEN run >= 6 THEN
        CASE WHEN adj_close IS NOT NULL AND adj_5 IS NOT NULL THEN adj_close / adj_5 ELSE close / close_5 END - 1
    END AS ret_5d,
    CASE WHEN run >= 22 THEN
        CASE WHEN adj_close IS NOT NULL AND adj_21 IS NOT NULL THEN adj_close / adj_21 ELSE close / close_21 END - 1
    END AS ret_21d,
    CASE WHEN run >= 64 THEN
        CASE WHEN adj_close IS NOT NULL AND adj_63 IS NOT NULL THEN adj_close / adj_63 ELSE close / close_63 END - 1
    END AS ret_63d,
    CASE WHEN run >= 22 THEN sqrt(greatest((s_ret2 - s_ret * s_ret / 21) / 20, 0) * 252) END AS volatility_21d,
    CASE WHEN run >= 15 THEN coalesce(100 * s_gain / nullif(s_gain + s_loss, 0), 50) END AS rsi_14,
    macd,
    CASE WHEN run >= 34 THEN s_macd / 9 END AS macd_signal,
    CASE WHEN run >= 20 AND std_20 > 0 THEN (close - s_20 / 20 + 2 * std_20) / (4 * std_20) END AS bollinger_pct_b,
    CASE WHEN run >= 15 THEN s_tr / 14 / close END AS atr_ratio_14,
    CASE WHEN run >= 21 AND std_vol > 0 THEN (log_volume - s_vol / 21) / std_vol END AS volume_zscore_21,
    CASE WHEN run >= 50 THEN close / (s_50 / 50) - 1 END AS price_vs_sma50,
    CASE WHEN run >= 200 THEN close / (s_200 / 200) - 1 END AS price_vs_sma200,
    CASE WHEN run >= 28 THEN s_dx / 14 END AS adx_14,
    CASE WHEN run >= 20 AND mean_dev_20 > 0 THEN (typical - mean_typical_20) / (0.015 * mean_dev_20) END AS cci_20
FROM today
