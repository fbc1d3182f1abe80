-- Exact, order-independent sums for window and group aggregates.
-- A float SUM over a window depends on the order DuckDB adds the terms, and its segment tree groups them
-- by their position in the partition, so the same window summed in a daily run and in a backfill (whose
-- partitions start at different dates) can differ in the last bit. Scaling each DOUBLE by 2^64 into a
-- HUGEINT makes the sum exact integer arithmetic: any order gives the same result, bit for bit.
-- Values must stay below 2^50 in magnitude (HUGEINT holds 2^127; a window or a day sums under 2^12 terms).
CREATE OR REPLACE MACRO to_fixed(x) AS CAST(x * 18446744073709551616 AS HUGEINT);
CREATE OR REPLACE MACRO from_fixed(s) AS CAST(s AS DOUBLE) / 18446744073709551616;
