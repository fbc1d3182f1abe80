-- slot_membership: the tickers holding an active (1) or archive (2) slot on the day, with their slot and the
-- day they first entered the universe (the start of their tenure).
-- grain: daily
-- lookback: 0
SELECT
    CAST(date AS DATE) AS date,
    ticker,
    CAST(slot AS INTEGER) AS slot,
    CAST(state AS TINYINT) AS state,
    CAST(first_added AS DATE) AS since
FROM {{ ref('slot_map') }}
WHERE state IN (1, 2)
    AND CAST(date AS DATE) IN (SELECT CAST(date AS DATE) FROM {{ target_dates }})
