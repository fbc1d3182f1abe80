-- stock_features: the 32 model inputs of every stock holding a slot on the day, normalised across stocks.
-- grain: daily
-- lookback: 0
-- order_by: date, slot
--
-- Rows: tickers in an active (1) or archive (2) slot on the day whose universe membership began on or
-- before it. Technical and fundamental features are robust z-scores across those stocks:
-- (x - median) / (IQR / 1.349), clipped to [-3, 3] and divided by 3, so each lies in [-1, 1]. Quartiles
-- are order statistics, exact whatever the row order. Tenure maps 0..10 years linearly onto [-1, 1];
-- slot_state is +1 active, -1 archive; the 5 padding features are 0. A missing or non-finite value (or a
-- feature with no spread that day) becomes 0, never NaN; n_missing counts the raw features that were
-- missing. `valid` says the stock has a bar dated that day (close is NULL otherwise; last_close is the
-- latest close at most 5 sessions old). The 32 features are float32 (FLOAT), the feature tensor's type.
WITH members AS (
    SELECT
        CAST(date AS DATE) AS date,
        ticker,
        CAST(slot AS INTEGER) AS slot,
        CAST(state AS TINYINT) AS state,
        CAST(since AS DATE) AS since
    FROM {{ ref('slot_membership') }}
    WHERE state IN (1, 2)
        AND CAST(since AS DATE) <= CAST(date AS DATE)
        AND CAST(date AS DATE) IN (SELECT CAST(date AS DATE) FROM {{ target_dates }})
),
features AS (
    SELECT
        m.date,
        m.ticker,
        {'slot': m.slot, 'state': m.state, 'since': m.since, 'close': t.close, 'stale_sessions': t.stale_sessions}
            AS info,
        t.ret_1d, t.ret_5d, t.ret_21d, t.ret_63d, t.volatility_21d, t.rsi_14, t.macd, t.macd_signal,
        t.bollinger_pct_b, t.atr_ratio_14, t.volume_zscore_21, t.price_vs_sma50, t.price_vs_sma200, t.adx_14,
        t.cci_20,
        f.pe_ratio, f.pb_ratio, f.ps_ratio, f.eps_ttm, f.eps_growth, f.roe, f.debt_to_equity, f.profit_margin,
        f.revenue_growth, f.log_market_cap
    FROM members AS m
    LEFT JOIN {{ ref('technical_features') }} AS t USING (date, ticker)
    LEFT JOIN {{ ref('fundamental_features') }} AS f USING (date, ticker)
),
-- the 25 raw features (a non-finite value counts as missing), and how many are missing
finite AS (
    SELECT
        date,
        ticker,
        info,
        CASE WHEN isfinite(COLUMNS(* EXCLUDE (date, ticker, info))) THEN COLUMNS(* EXCLUDE (date, ticker, info)) END
    FROM features
),
counted AS (
    SELECT *, list_value(*COLUMNS(* EXCLUDE (date, ticker, info))) AS raw_values
    FROM finite
),
-- per day and feature: first quartile (q1), median (q2) and third quartile (q3) across the day's stocks,
-- kept as the median and the robust scale (macros/robust_z.sql).
-- The day is keyed "Day" so that the lower-case pattern below picks the 25 feature columns only.
quartiles AS (
    SELECT
        date AS "Day",
        quantile_cont(COLUMNS(* EXCLUDE (date, ticker, info)), [0.25, 0.5, 0.75])
    FROM finite
    GROUP BY date
),
day_quartiles AS (
    SELECT
        "Day" AS date,
        COLUMNS('^([a-z].*)$')[2] AS 'q2_\1',
        robust_scale(COLUMNS('^([a-z].*)$')[1], COLUMNS('^([a-z].*)$')[3]) AS 'scale_\1'
    FROM quartiles
),
normalised AS (
    SELECT
        v.date,
        v.ticker,
        v.info.slot,
        v.info.state,
        CASE WHEN v.info.stale_sessions = 0 THEN v.info.close END AS close,
        v.info.close AS last_close,
        coalesce(v.info.stale_sessions = 0, false) AS valid,
        len(v.raw_values) - list_count(v.raw_values) AS n_missing,
        robust_z(v.ret_1d, q2_ret_1d, scale_ret_1d) AS ret_1d,
        robust_z(v.ret_5d, q2_ret_5d, scale_ret_5d) AS ret_5d,
        robust_z(v.ret_21d, q2_ret_21d, scale_ret_21d) AS ret_21d,
        robust_z(v.ret_63d, q2_ret_63d, scale_ret_63d) AS ret_63d,
        robust_z(v.volatility_21d, q2_volatility_21d, scale_volatility_21d) AS volatility_21d,
        robust_z(v.rsi_14, q2_rsi_14, scale_rsi_14) AS rsi_14,
        robust_z(v.macd, q2_macd, scale_macd) AS macd,
        robust_z(v.macd_signal, q2_macd_signal, scale_macd_signal) AS macd_signal,
        robust_z(v.bollinger_pct_b, q2_bollinger_pct_b, scale_bollinger_pct_b) AS bollinger_pct_b,
        robust_z(v.atr_ratio_14, q2_atr_ratio_14, scale_atr_ratio_14) AS atr_ratio_14,
        robust_z(v.volume_zscore_21, q2_volume_zscore_21, scale_volume_zscore_21) AS volume_zscore_21,
        robust_z(v.price_vs_sma50, q2_price_vs_sma50, scale_price_vs_sma50) AS price_vs_sma50,
        robust_z(v.price_vs_sma200, q2_price_vs_sma200, scale_price_vs_sma200) AS price_vs_sma200,
        robust_z(v.adx_14, q2_adx_14, scale_adx_14) AS adx_14,
        robust_z(v.cci_20, q2_cci_20, scale_cci_20) AS cci_20,
        robust_z(v.pe_ratio, q2_pe_ratio, scale_pe_ratio) AS pe_ratio,
        robust_z(v.pb_ratio, q2_pb_ratio, scale_pb_ratio) AS pb_ratio,
        robust_z(v.ps_ratio, q2_ps_ratio, scale_ps_ratio) AS ps_ratio,
        robust_z(v.eps_ttm, q2_eps_ttm, scale_eps_ttm) AS eps_ttm,
        robust_z(v.eps_growth, q2_eps_growth, scale_eps_growth) AS eps_growth,
        robust_z(v.roe, q2_roe, scale_roe) AS roe,
        robust_z(v.debt_to_equity, q2_debt_to_equity, scale_debt_to_equity) AS debt_to_equity,
        robust_z(v.profit_margin, q2_profit_margin, scale_profit_margin) AS profit_margin,
        robust_z(v.revenue_growth, q2_revenue_growth, scale_revenue_growth) AS revenue_growth,
        robust_z(v.log_market_cap, q2_log_market_cap, scale_log_market_cap) AS log_market_cap,
        greatest(least(CAST(datediff('day', v.info.since, v.date) AS DOUBLE) / 365.25 / 5 - 1, 1), -1) AS tenure,
        CASE WHEN v.info.state = 1 THEN 1 ELSE -1 END AS slot_state,
        0 AS pad_1,
        0 AS pad_2,
        0 AS pad_3,
        0 AS pad_4,
        0 AS pad_5
    FROM counted AS v
    JOIN day_quartiles USING (date)
)
SELECT
    date,
    ticker,
    slot,
    state,
    close,
    last_close,
    valid,
    n_missing,
    CAST(COLUMNS(* EXCLUDE (date, ticker, slot, state, close, last_close, valid, n_missing)) AS FLOAT)
FROM normalised
