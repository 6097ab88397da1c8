import json

from pseudocot.train.checkpoints import last_complete_checkpoint


def test_newest_complete_checkpoint_wins_and_cut_off_ones_are_skipped(tmp_path):
    assert last_complete_checkpoint(tmp_path / "missing") is None
    for step, state in ((3, {"global_step": 3}), (12, {"global_step": 12}), (9, None)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoint-15").mkdir()  # killed before its state was written
    (tmp_path / "checkpoint-20").mkdir()
    (tmp_path / "checkpoint-20" / "trainer_state.json").write_text('{"global_st')  # killed mid-write
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-12")
