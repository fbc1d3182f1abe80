-- Cross-sectional robust z-score of value x given the median q2 and the scale of the day's values:
-- (x - median) / (IQR / 1.349), clipped to [-3, 3] and divided by 3, so it lies in [-1, 1].
-- IQR / 1.349 is the standard deviation of a normal distribution, so on well-behaved data this is the usual
-- z-score, while outliers neither dominate the scale nor leave [-1, 1]. Missing x, or a day on which the
-- feature has no spread (IQR = 0, so no scale), gives 0.
-- robust_scale: the scale IQR / 1.349 from the first and third quartiles q1 and q3; NULL when IQR <= 0.
CREATE OR REPLACE MACRO robust_scale(q1, q3) AS CASE WHEN q3 > q1 THEN (q3 - q1) / 1.349 END;
CREATE OR REPLACE MACRO robust_z(x, q2, scale) AS
    CASE
        WHEN x IS NULL OR scale IS NULL THEN 0.0
        ELSE greatest(least((x - q2) / scale, 3.0), -3.0) / 3.0
    END;
