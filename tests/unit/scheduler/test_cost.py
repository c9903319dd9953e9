"""Prices per provider and GPU type, and each provider's billing rounding."""

from __future__ import annotations

import pytest

from comfyfleet.common.config import ConfigError
from services.scheduler.cost import DEFAULT_PRICES, Billing, PriceTable, ProviderPrices


def test_per_second_billing_rounds_up_to_whole_seconds() -> None:
    billing = Billing()
    assert billing.billed_s(0) == 0
    assert billing.billed_s(0.2) == 1
    assert billing.billed_s(12.0) == 12
    assert billing.billed_s(12.0000000001) == 12, "float noise is not a second more"
    assert billing.billed_s(12.01) == 13


def test_a_ten_minute_minimum_bills_short_runs_as_ten_minutes() -> None:
    verda = Billing(increment_s=1, minimum_s=600)
    assert verda.billed_s(30) == 600
    assert verda.billed_s(601.5) == 602
    assert verda.billed_s(0) == 0, "a run that never happened costs nothing"
    hourly = Billing(increment_s=3600)
    assert hourly.billed_s(61) == 3600


def test_gpu_names_match_on_whole_words_and_the_longest_wins() -> None:
    prices = ProviderPrices({"L4": 0.8, "L40S": 1.9, "RTX 4090": 1.1, "*": 1.0})
    assert prices.hourly("NVIDIA L40S") == 1.9
    assert prices.hourly("NVIDIA L4") == 0.8
    assert prices.hourly("NVIDIA L40") == 1.0, "L4 is not L40"
    assert prices.hourly("NVIDIA GeForce RTX 4090") == 1.1
    assert prices.hourly("L4") == 0.8
    assert prices.hourly("") == 1.0
    assert ProviderPrices({"A100": 2.0}).hourly("cpu") == 0.0
    assert ProviderPrices({"A100": 2.0, "H100": 4.0}).reference == 2.0


def test_an_attempt_costs_its_billed_seconds_at_its_gpus_price() -> None:
    table = PriceTable(
        {
            "runpod": ProviderPrices({"L40S": 1.8, "*": 3.6}),
            "verda": ProviderPrices({"*": 3.6}, Billing(minimum_s=600)),
        }
    )
    assert table.cost_usd("runpod", "NVIDIA L40S", 10.5) == pytest.approx(11 * 1.8 / 3600)
    assert table.cost_usd("runpod", "NVIDIA H100", 100) == pytest.approx(0.1)
    assert table.cost_usd("verda", "any", 60) == pytest.approx(0.6)
    assert table.cost_usd("unknown", "any", 60) == 0
    assert table.reference("verda") == 3.6 and table.reference("unknown") == 0


def test_the_price_table_parses_from_json() -> None:
    table = PriceTable.parse(
        '{"runpod": {"usd_per_hour": {"L40S": 1.9, "*": 1}},'
        ' "verda": {"usd_per_hour": {"*": 2}, "minimum_s": 600}}'
    )
    assert table.providers["runpod"].hourly("L40S") == 1.9
    assert table.providers["verda"].billing == Billing(1.0, 600.0)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"runpod": {}}',
        '{"runpod": {"usd_per_hour": {"*": -1}}}',
        '{"runpod": {"usd_per_hour": {"*": "cheap"}}}',
        '{"runpod": {"usd_per_hour": {"*": 1}, "increment_s": 0}}',
    ],
)
def test_a_bad_price_table_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        PriceTable.parse(text)


def test_the_defaults_prefer_local_hardware_then_runpod_then_ecs() -> None:
    assert DEFAULT_PRICES.cost_usd("local", "NVIDIA H100", 3600) == 0
    references = [DEFAULT_PRICES.reference(p) for p in ("local", "runpod", "ecs")]
    assert references == sorted(references) and len(set(references)) == 3
    assert DEFAULT_PRICES.providers["ecs"].billing.minimum_s == 60
