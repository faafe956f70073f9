"""The in-memory iptables refuses what the kernel refuses, and then holds what it held before."""

from __future__ import annotations

import pytest

from pykubeproxy.backends.iptables.kernel import IptablesError
from pykubeproxy.backends.iptables.memory import MemoryIptables

BASE = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-A\nCOMMIT\n"


def loaded() -> MemoryIptables:
    kernel = MemoryIptables()
    kernel.restore(BASE)
    return kernel


def test_a_jump_to_a_chain_that_does_not_exist_is_refused_and_nothing_changes() -> None:
    kernel = loaded()
    before = kernel.save()

    with pytest.raises(IptablesError, match="missing chain KUBE-SVC-B"):
        kernel.restore("*nat\n:KUBE-NEW - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-B\nCOMMIT\n")

    assert kernel.save() == before
    assert kernel.written == [BASE]


def test_deleting_a_chain_that_is_still_jumped_to_is_refused() -> None:
    kernel = loaded()

    with pytest.raises(IptablesError):
        kernel.restore("*nat\n:KUBE-SVC-A - [0:0]\n-X KUBE-SVC-A\nCOMMIT\n")

    assert kernel.save().table("nat").chain("KUBE-SVC-A") is not None


def test_deleting_a_chain_that_still_holds_rules_is_refused() -> None:
    kernel = loaded()

    with pytest.raises(IptablesError, match="not empty"):
        kernel.restore(
            "*nat\n-A KUBE-SVC-A -j RETURN\n-D KUBE-SERVICES -j KUBE-SVC-A\n-X KUBE-SVC-A\nCOMMIT\n"
        )


def test_a_jump_and_a_flushed_then_deleted_target_in_one_payload_are_accepted() -> None:
    kernel = loaded()

    kernel.restore(
        "*nat\n-D KUBE-SERVICES -j KUBE-SVC-A\n:KUBE-SVC-A - [0:0]\n-X KUBE-SVC-A\nCOMMIT\n"
    )

    assert kernel.save().table("nat").chain("KUBE-SVC-A") is None


def test_a_test_restore_checks_without_applying() -> None:
    kernel = loaded()

    kernel.restore("*nat\n:KUBE-SVC-B - [0:0]\nCOMMIT\n", test=True)

    assert kernel.save().table("nat").chain("KUBE-SVC-B") is None


def test_a_refusal_names_the_line_and_its_text_as_the_kernel_does() -> None:
    kernel = loaded()

    with pytest.raises(IptablesError) as refused:
        kernel.restore("*nat\n-A KUBE-SVC-A -j RETURN\n-A KUBE-NOPE -j RETURN\nCOMMIT\n")

    assert (refused.value.line, refused.value.text) == (3, "-A KUBE-NOPE -j RETURN")
