-- Cross-sectional robust z-score of value x given the first quartile q1, median q2 and third quartile q3
-- of the day's values: (x - median) / (IQR / 1.349), clipped to [-3, 3] and divided by 3, so it lies in [-1, 1].
-- IQR / 1.349 is the standard deviation of a normal distribution, so on well-behaved data this is the usual
-- z-score, while outliers neither dominate the scale nor leave [-1, 1]. Missing x, or a day on which the
-- feature has no spread (IQR = 0), gives 0.
CREATE OR REPLACE MACRO robust_z(x, q1, q2, q3) AS
    CASE
        WHEN x IS NULL OR q3 <= q1 THEN 0.0
        ELSE greatest(least((x - q2) / ((q3 - q1) / 1.349), 3.0), -3.0) / 3.0
    END;
