"""train_model collects its run's input pipelines when it returns (a long
process would keep their threads), except within exit_follows_run, where
the process exits next (the CLI) and the collection only delays it: the
iterators' destructors wait for tf.data's threads."""

import pytest

from tf_lbsgd import train_lib


@pytest.fixture
def collections(monkeypatch):
    calls = []
    monkeypatch.setattr(train_lib.gc, "collect", lambda: calls.append(1))
    return calls


def _failing_run(tmp_path):
    with pytest.raises(ValueError, match="mode"):  # Refused at once.
        train_lib.train_model(str(tmp_path), None, None, mode="fit")


def test_a_run_is_collected_after_it_returns(collections, tmp_path):
    _failing_run(tmp_path)
    assert collections == [1]


def test_not_when_the_process_exits_next(collections, tmp_path):
    with train_lib.exit_follows_run():
        _failing_run(tmp_path)
    assert collections == []
    _failing_run(tmp_path)  # The setting ends with the block.
    assert collections == [1]
