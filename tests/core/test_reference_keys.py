"""Reference ids per tenant: the tenant is part of the content hash."""

from __future__ import annotations

from core.cache import reference_key
from core.requests import DEFAULT_TENANT


def test_two_tenants_get_two_ids_and_the_default_tenant_keeps_the_old_ones() -> None:
    args = (b"image", b"mask", "dinov3_vits16-x", 64)
    alpha, beta = reference_key(*args, "alpha"), reference_key(*args, "beta")
    assert len({alpha, beta, reference_key(*args, DEFAULT_TENANT)}) == 3
    assert reference_key(*args) == reference_key(*args, DEFAULT_TENANT)
    assert reference_key(*args) == "33271fd8cc4092022ec45be51520f515"  # the id before tenants existed
    assert alpha == reference_key(*args, "alpha") and len(alpha) == 32
