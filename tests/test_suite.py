"""The suite's own premises."""

import pytest


@pytest.mark.xdist_group("premise")
def test_xdist_groups_keep_their_tests_on_one_worker(request):
    """`make test` runs 2 workers with --dist loadgroup: tests of one xdist_group run on one
    worker, one after another, which the DDP and SLURM tests rely on. xdist marks a grouped
    test's node id with its group; pytest 9.2 drops that mark, and the groups silently split."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not under xdist's --dist loadgroup")
    assert request.node.nodeid.endswith("@premise")
