"""Market data resource: picks the source chain (sample replay, or Yahoo with backups) by configuration."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import dagster as dg
import pandas as pd
from pydantic import Field

from magikarp_assets.core.market_data.base import MarketDataSource
from magikarp_assets.core.market_data.fallback import FetchReport, fetch_with_fallback
from magikarp_assets.core.market_data.sample import SampleSource, sample_annual_fundamentals, sample_universe

Screen = Callable[[pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]


class MarketDataResource(dg.ConfigurableResource):
    """Where daily bars, the universe and fundamentals come from.

    `provider="sample"` (default) replays the bundled real sample: primary IEX file, Yahoo file as
    backup. `provider="live"` uses Yahoo Finance with Polygon.io and Alpha Vantage as backups (each
    backup only when its API key is configured). `provider="synthetic"` is for scale benchmarks only.
    """

    provider: str = Field(default="sample", description="sample | live | synthetic")
    polygon_api_key: str | None = Field(default=None, description="Polygon.io key (use EnvVar)")
    alphavantage_api_key: str | None = Field(default=None, description="Alpha Vantage key (use EnvVar)")
    yahoo_base_url: str | None = Field(default=None, description="Yahoo chart API base URL (tests)")
    polygon_base_url: str = "https://api.polygon.io"
    alphavantage_base_url: str = "https://www.alphavantage.co"
    iwv_holdings_url: str = Field(
        default=(
            "https://www.ishares.com/us/products/239714/ishares-russell-3000-etf/1467271812596.ajax"
            "?fileType=csv&fileName=IWV_holdings&dataType=fund"
        ),
        description="iShares IWV holdings CSV (live universe)",
    )
    chunk_size: int = 200
    max_retries: int = 4
    synthetic_tickers: int = 3000
    synthetic_seed: int = 0
    synthetic_start: str = "2014-02-07"  # three years of sessions ending where the real sample ends
    synthetic_end: str = "2017-02-07"

    def _check_provider(self) -> None:
        if self.provider not in ("sample", "live", "synthetic"):
            raise ValueError(f"market data provider {self.provider!r} is not one of sample, live, synthetic")

    def price_sources(self) -> list[MarketDataSource]:
        self._check_provider()
        if self.provider == "sample":
            return [SampleSource("iex"), SampleSource("yahoo")]
        if self.provider == "synthetic":
            return [self._synthetic().source()]
        from magikarp_assets.core.market_data.alphavantage import AlphaVantageDailySource
        from magikarp_assets.core.market_data.polygon import PolygonGroupedDailySource
        from magikarp_assets.core.market_data.yahoo import YahooChartSource

        chain: list[MarketDataSource] = [
            YahooChartSource(
                base_url=self.yahoo_base_url, chunk_size=self.chunk_size, max_retries=self.max_retries
            )
        ]
        if self.polygon_api_key:
            chain.append(
                PolygonGroupedDailySource(
                    api_key=self.polygon_api_key, base_url=self.polygon_base_url, max_retries=self.max_retries
                )
            )
        if self.alphavantage_api_key:
            chain.append(
                AlphaVantageDailySource(
                    api_key=self.alphavantage_api_key,
                    base_url=self.alphavantage_base_url,
                    max_retries=self.max_retries,
                )
            )
        return chain

    def benchmark_sources(self) -> list[MarketDataSource]:
        return [SampleSource("benchmarks")] if self.provider == "sample" else self.price_sources()[:1]

    def fetch_ohlcv(
        self,
        tickers: Sequence[str],
        start: dt.date,
        end: dt.date,
        expected: pd.MultiIndex | None = None,
        screen: Screen | None = None,
    ) -> tuple[pd.DataFrame, FetchReport]:
        return fetch_with_fallback(
            self.price_sources(), tickers, start, end, expected=expected, screen=screen
        )

    def universe(self) -> pd.DataFrame:
        """Constituents: ticker, name, sector, weight, listed_from (NaT when unknown: expected every day)."""
        self._check_provider()
        if self.provider == "sample":
            return sample_universe()
        if self.provider == "synthetic":
            return self._synthetic().universe_frame()
        from magikarp_assets.core.market_data.http import http_get_bytes
        from magikarp_assets.core.universe.iwv import parse_iwv_holdings, universe_from_holdings

        content = http_get_bytes(self.iwv_holdings_url, source="ishares", max_retries=self.max_retries)
        out = universe_from_holdings(parse_iwv_holdings(content, source_name="IWV holdings"))
        out["listed_from"] = pd.NaT
        return out

    def fundamentals(self) -> pd.DataFrame:
        """Reported fundamentals (FUNDAMENTAL_COLUMNS) with the date each became public."""
        self._check_provider()
        if self.provider == "sample":
            from magikarp_assets.core.features.fundamentals import fundamentals_from_annual_file

            return fundamentals_from_annual_file(sample_annual_fundamentals())
        if self.provider == "synthetic":
            return self._synthetic().fundamentals
        from magikarp_assets.core.market_data.yahoo_fundamentals import fetch_quarterly_fundamentals

        return fetch_quarterly_fundamentals(
            self.universe()["ticker"].tolist(), max_retries=self.max_retries, base_url=self.yahoo_base_url
        )

    def _synthetic(self):
        from magikarp_assets.core.synthetic import cached_synthetic_market

        return cached_synthetic_market(
            self.synthetic_tickers, self.synthetic_start, self.synthetic_end, self.synthetic_seed
        )
