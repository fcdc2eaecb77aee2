"""grpo_job.models: the dequantized-model cache that runs may share (`cache_dir`)."""

import pytest

from grpo_job import models


def _folder(path, text):
    path.mkdir(parents=True)
    (path / "config.json").write_text(text)
    return path


def test_a_finished_conversion_is_moved_into_place(tmp_path):
    models.move_into_cache(_folder(tmp_path / "m.tmp-1", "mine"), tmp_path / "m")
    assert (tmp_path / "m/config.json").read_text() == "mine" and not (tmp_path / "m.tmp-1").exists()


def test_a_run_that_loses_the_race_keeps_the_winner_and_cleans_up(tmp_path):
    """Two runs sharing a cache convert the same GGUF at once: the second rename finds the folder there."""
    _folder(tmp_path / "m", "first")
    models.move_into_cache(_folder(tmp_path / "m.tmp-2", "second"), tmp_path / "m")
    assert (tmp_path / "m/config.json").read_text() == "first" and not (tmp_path / "m.tmp-2").exists()


def test_an_incomplete_folder_in_the_way_is_an_error_not_a_model(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m/stray").write_text("")
    with pytest.raises(OSError):
        models.move_into_cache(_folder(tmp_path / "m.tmp-3", "mine"), tmp_path / "m")
    assert not (tmp_path / "m/config.json").exists()
