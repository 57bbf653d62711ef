"""The neutral Autodiscover answer validates itself."""

from __future__ import annotations

import dataclasses

import pytest

from cas.codecs.autodiscover import Redirect, UserSettings
from tests.unit.codecs.autodiscover.conftest import ANN


@pytest.mark.parametrize(
    "kwargs",
    [
        {"address": "", "ews_url": "https://n/EWS/Exchange.asmx"},
        {"address": "ann", "ews_url": "https://n/EWS/Exchange.asmx"},
        {"address": "ann@x.test", "ews_url": ""},
        {"address": "ann@x.test", "ews_url": "ftp://n/EWS"},
        {"address": "ann@x.test", "ews_url": "https://n/EWS", "internal_ews_url": "n/EWS"},
    ],
)
def test_user_settings_refuse_nonsense(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        UserSettings(**kwargs)


def test_internal_url_defaults_to_external() -> None:
    bare = UserSettings("bob@x.test", "https://n/EWS/Exchange.asmx")
    assert bare.effective_internal_ews_url == bare.ews_url
    assert ANN.effective_internal_ews_url == ANN.internal_ews_url


def test_answers_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ANN.address = "x@y.test"  # type: ignore[misc]


@pytest.mark.parametrize("address", ["", "nobody"])
def test_redirect_needs_an_address(address: str) -> None:
    with pytest.raises(ValueError):
        Redirect(address)
