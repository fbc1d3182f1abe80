-- technical_features: the 15 price and volume features of each stock on the day, raw (not yet normalised).
-- grain: daily
-- lookback: 199
--
-- Windows are finite, counted in sessions over stg_prices rows (where a missing session already repeats
-- the last bar, at most 5 sessions). A statistic needs its whole window inside the ticker's current run of
-- consecutive rows, else it is missing (NULL); values that need the previous bar (returns, true range,
-- gains, directional moves) need one more session. No exponential average is used: RSI, ATR and ADX
-- average over their period (Cutler / simple variants) and MACD is built from simple averages, so a day
-- depends only on its own window, never on where the history starts.
-- Determinism: window sums go through to_fixed/from_fixed (exact integer sums, see macros/fixed_point.sql);
-- CCI's mean deviation adds the window's values as an ordered list.
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
windows AS (
    SELECT
        *,
        -- length of the ticker's current run of consecutive sessions (counted from the first session read
        -- when the run began earlier)
        sess - coalesce(max(run_break) OVER running, (SELECT min(sess) - {{ lookback }} FROM targets)) + 1 AS run,
        lag(close, 5) OVER w AS close_5,
        lag(adj_close, 5) OVER w AS adj_5,
        lag(close, 21) OVER w AS close_21,
        lag(adj_close, 21) OVER w AS adj_21,
        lag(close, 63) OVER w AS close_63,
        lag(adj_close, 63) OVER w AS adj_63,
        from_fixed(sum(to_fixed(ret_1d)) OVER w21) AS s_ret,
        from_fixed(sum(to_fixed(ret_1d * ret_1d)) OVER w21) AS s_ret2,
        from_fixed(sum(to_fixed(gain)) OVER w14) AS s_gain,
        from_fixed(sum(to_fixed(loss)) OVER w14) AS s_loss,
        from_fixed(sum(to_fixed(true_range)) OVER w14) AS s_tr,
        from_fixed(sum(to_fixed(plus_dm)) OVER w14) AS s_pdm,
        from_fixed(sum(to_fixed(minus_dm)) OVER w14) AS s_mdm,
        from_fixed(sum(to_fixed(close)) OVER w12) AS s_12,
        from_fixed(sum(to_fixed(close)) OVER w26) AS s_26,
        from_fixed(sum(to_fixed(close)) OVER w20) AS s_20,
        from_fixed(sum(to_fixed(close * close)) OVER w20) AS s2_20,
        from_fixed(sum(to_fixed(close)) OVER w50) AS s_50,
        from_fixed(sum(to_fixed(close)) OVER w200) AS s_200,
        from_fixed(sum(to_fixed(log_volume)) OVER w21) AS s_vol,
        from_fixed(sum(to_fixed(log_volume * log_volume)) OVER w21) AS s_vol2,
        list(typical) OVER w20 AS typical_20
    FROM bars
    WINDOW
        w AS (PARTITION BY ticker ORDER BY sess),
        running AS (PARTITION BY ticker ORDER BY sess ROWS UNBOUNDED PRECEDING),
        w12 AS (PARTITION BY ticker ORDER BY sess ROWS 11 PRECEDING),
        w14 AS (PARTITION BY ticker ORDER BY sess ROWS 13 PRECEDING),
        w20 AS (PARTITION BY ticker ORDER BY sess ROWS 19 PRECEDING),
        w21 AS (PARTITION BY ticker ORDER BY sess ROWS 20 PRECEDING),
        w26 AS (PARTITION BY ticker ORDER BY sess ROWS 25 PRECEDING),
        w50 AS (PARTITION BY ticker ORDER BY sess ROWS 49 PRECEDING),
        w200 AS (PARTITION BY ticker ORDER BY sess ROWS 199 PRECEDING)
),
-- per-day lines averaged again: the MACD line and ADX's directional index (sum of TR cancels in DX)
lines AS (
    SELECT
        *,
        CASE WHEN run >= 26 THEN (s_12 / 12 - s_26 / 26) / close END AS macd,
        CASE WHEN run >= 15 THEN coalesce(100 * abs(s_pdm - s_mdm) / nullif(s_pdm + s_mdm, 0), 0) END AS dx
    FROM windows
),
smoothed AS (
    SELECT
        *,
        from_fixed(sum(to_fixed(macd)) OVER w9) AS s_macd,
        from_fixed(sum(to_fixed(dx)) OVER w14) AS s_dx
    FROM lines
    WINDOW
        w9 AS (PARTITION BY ticker ORDER BY sess ROWS 8 PRECEDING),
        w14 AS (PARTITION BY ticker ORDER BY sess ROWS 13 PRECEDING)
),
today AS (
    SELECT
        *,
        sqrt(greatest(s2_20 / 20 - (s_20 / 20) * (s_20 / 20), 0)) AS std_20,
        list_avg(typical_20) AS mean_typical_20,
        sqrt(greatest((s_vol2 - s_vol * s_vol / 21) / 20, 0)) AS std_vol
    FROM smoothed
    WHERE sess IN (SELECT sess FROM targets)
),
cci AS (
    SELECT *, list_avg(list_transform(typical_20, lambda x: abs(x - mean_typical_20))) AS mean_dev_20
    FROM today
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
FROM cci
