-- fundamental_features: the 10 valuation, profitability and growth features of each stock on the day,
-- point in time and raw (not yet normalised).
-- grain: daily
-- lookback: 0
-- per_ticker: true
--
-- Point in time: a report is visible on day t only when its public_date <= t (ASOF join); of several
-- reports made public the same day the one with the latest period counts. A report whose fiscal period
-- ended more than 550 days before t is stale (missing). Growth compares with the report of the previous
-- fiscal year (period ending 300 to 430 days earlier), which must itself be public by t.
-- Offline the reports are annual, so "TTM" is the last reported fiscal year. raw_fundamentals is read
-- whole (it is not a daily partition); prices are the day's split-adjusted closes.
WITH reports AS (
    SELECT
        ticker,
        CAST(period_ending AS DATE) AS period_ending,
        CAST(public_date AS DATE) AS public_date,
        CAST(revenue AS DOUBLE) AS revenue,
        CAST(net_income AS DOUBLE) AS net_income,
        CAST(eps AS DOUBLE) AS eps,
        CAST(shares_outstanding AS DOUBLE) AS shares_outstanding,
        CAST(total_equity AS DOUBLE) AS total_equity,
        CAST(long_term_debt AS DOUBLE) AS long_term_debt
    FROM {{ ref('raw_fundamentals') }}
    QUALIFY row_number() OVER (PARTITION BY ticker, CAST(public_date AS DATE) ORDER BY period_ending DESC) = 1
),
with_previous AS (
    SELECT
        r.*,
        p.public_date AS prev_public_date,
        p.eps AS prev_eps,
        p.revenue AS prev_revenue
    FROM reports AS r
    LEFT JOIN reports AS p
        ON p.ticker = r.ticker
        AND p.period_ending BETWEEN r.period_ending - INTERVAL 430 DAY AND r.period_ending - INTERVAL 300 DAY
    QUALIFY row_number() OVER (PARTITION BY r.ticker, r.public_date ORDER BY p.period_ending DESC NULLS LAST) = 1
),
prices AS (
    SELECT date, ticker, close
    FROM {{ ref('stg_prices') }}
    WHERE date IN (SELECT CAST(date AS DATE) FROM {{ target_dates }})
),
point_in_time AS (
    SELECT
        p.date,
        p.ticker,
        p.close,
        f.period_ending,
        f.public_date,
        f.revenue,
        f.net_income,
        f.eps,
        f.shares_outstanding,
        f.total_equity,
        f.long_term_debt,
        CASE WHEN f.prev_public_date <= p.date THEN f.prev_eps END AS prev_eps,
        CASE WHEN f.prev_public_date <= p.date THEN f.prev_revenue END AS prev_revenue,
        p.close * f.shares_outstanding AS market_cap
    FROM prices AS p
    ASOF LEFT JOIN with_previous AS f
        ON p.ticker = f.ticker
        AND p.date >= f.public_date
),
fresh AS (
    SELECT * REPLACE (
        CASE WHEN period_ending >= date - INTERVAL 550 DAY THEN period_ending END AS period_ending
    )
    FROM point_in_time
)
SELECT
    date,
    ticker,
    period_ending,
    CASE WHEN period_ending IS NOT NULL THEN public_date END AS public_date,
    CASE WHEN period_ending IS NOT NULL AND eps > 0 THEN close / eps END AS pe_ratio,
    CASE WHEN period_ending IS NOT NULL AND total_equity > 0 THEN market_cap / total_equity END AS pb_ratio,
    CASE WHEN period_ending IS NOT NULL AND revenue > 0 THEN market_cap / revenue END AS ps_ratio,
    CASE WHEN period_ending IS NOT NULL THEN eps END AS eps_ttm,
    CASE WHEN period_ending IS NOT NULL AND prev_eps <> 0 THEN (eps - prev_eps) / abs(prev_eps) END AS eps_growth,
    CASE WHEN period_ending IS NOT NULL AND total_equity > 0 THEN net_income / total_equity END AS roe,
    CASE WHEN period_ending IS NOT NULL AND total_equity > 0 THEN long_term_debt / total_equity END AS debt_to_equity,
    CASE WHEN period_ending IS NOT NULL AND revenue > 0 THEN net_income / revenue END AS profit_margin,
    CASE WHEN period_ending IS NOT NULL AND prev_revenue > 0 THEN revenue / prev_revenue - 1 END AS revenue_growth,
    CASE WHEN period_ending IS NOT NULL AND market_cap > 0 THEN ln(market_cap) END AS log_market_cap
FROM fresh
