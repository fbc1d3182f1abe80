-- Exact, order-independent sums for window and group aggregates.
-- A float SUM over a window depends on the order DuckDB adds the terms, and its segment tree groups them
-- by their position in the partition, so the same window summed in a daily run and in a backfill (whose
-- partitions start at different dates) can differ in the last bit. Scaling each DOUBLE by 2^64 into a
-- HUGEINT makes the sum exact integer arithmetic: any order gives the same result, bit for bit.
-- Values must stay below 2^50 in magnitude (HUGEINT holds 2^127; a window or a day sums under 2^12 terms).
-- Running sums (window_sum below) add every row read in one run, all tickers: the values' magnitude times
-- the rows must stay below 2^63 (say values below 2^40 over 2^23 rows; a $5,000 price squared is below
-- 2^25); beyond that DuckDB raises an overflow error rather than return a wrong sum.
CREATE OR REPLACE MACRO to_fixed(x) AS CAST(x * 18446744073709551616 AS HUGEINT);
CREATE OR REPLACE MACRO from_fixed(s) AS CAST(s AS DOUBLE) / 18446744073709551616;
-- The sum of the k rows of a partition ending at a row, from running sums over rows streamed in partition
-- order: c and n are the running sum of to_fixed values and the running count of non-NULL values at the
-- row, c_lag and n_lag the same k rows earlier (NULL when the stream has fewer rows: nothing was summed
-- before it). Integer arithmetic, so where the row is at least the k-th of its partition the result equals
-- from_fixed(sum(to_fixed(x)) OVER (... ROWS k - 1 PRECEDING)) bit for bit: NULL when no value is in the
-- window, as SUM. Nearer the partition's start the window reaches into the rows streamed before it, so the
-- caller must not use the result there.
CREATE OR REPLACE MACRO window_sum(c, c_lag, n, n_lag) AS
    CASE WHEN n - coalesce(n_lag, 0) > 0 THEN from_fixed(c - coalesce(c_lag, 0)) END;
-- Guard of a stream of rows: `checked` (the earlier steps' guard) when the row directly follows the one
-- it followed in the step that numbered the stream (pos); otherwise an error naming the model and row,
-- since running sums over rows out of order would be wrong.
CREATE OR REPLACE MACRO stream_check(pos, prev_pos, checked, model) AS
    CASE
        WHEN pos > 1 AND prev_pos IS DISTINCT FROM pos - 1
            THEN error(model || ': rows left the stream order at row ' || pos)
        ELSE coalesce(checked, true)
    END;
