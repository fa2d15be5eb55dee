"""``sparsecode export``: a model file or a pretrained SAE to SAELens and sparsify, read
back by load_sae; warnings and refusals as one-line messages."""

from sparsecode.cli import main
from sparsecode.io import export_sparsify, load_sae, save_model
from tests.helpers import one_line_error as _one_line_error
from tests.sae_files import random_weights, write_sparsify
from tests.test_exports import _X, D, _mpsae, _pretrained, _same_codes


def test_cli_exports_a_model_file_to_both_formats(tmp_path, capsys):
    m = _mpsae()
    save_model(m, tmp_path / "model.h5")
    assert main(["export", str(tmp_path / "model.h5"), "--saelens", str(tmp_path / "a"),
                 "--sparsify", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "(SAELens; d_in 16, d_sae 32)" in err and "(sparsify; d_in 16, d_sae 32)" in err
    assert "warning" not in err
    codes = m.transform(_X())
    for out in ("a", "b"):
        _same_codes(load_sae(tmp_path / out).encode(_X()), codes, "float32")
    assert main(["export", str(tmp_path / "model.h5"), "--sparsify", str(tmp_path / "b")]) == 2
    _one_line_error(capsys, "already holds an export", "--overwrite")


def test_cli_exports_a_pretrained_sae(tmp_path, capsys):
    src = write_sparsify(tmp_path / "src", random_weights(D, 64, seed=5), k=8,
                         hookpoint="layers.3").parent
    assert main(["export", str(src), "--hookpoint", "layers.3", "--saelens",
                 str(tmp_path / "a"), "--sparsify", str(tmp_path / "b")]) == 0
    sae = load_sae(src, hookpoint="layers.3")
    for back in (load_sae(tmp_path / "a"), load_sae(tmp_path / "b", hookpoint="layers.3")):
        _same_codes(back.encode(_X()), sae.encode(_X()), "float32")
    capsys.readouterr()
    # into the folder it was read from
    assert main(["export", str(src / "layers.3"), "--sparsify", str(src / "layers.3"),
                 "--overwrite"]) == 2
    _one_line_error(capsys, "would destroy the input")


def test_cli_warnings_and_refusals(tmp_path, capsys):
    save_model(_mpsae(solver="mp"), tmp_path / "mp.h5")
    assert main(["export", str(tmp_path / "mp.h5"), "--sparsify", str(tmp_path / "a")]) == 0
    assert "sparsecode: warning: model.solver is 'mp'" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "mp.h5")]) == 2
    _one_line_error(capsys, "nothing to write")
    assert main(["export", str(tmp_path / "mp.h5"), "--saelens", str(tmp_path / "c"),
                 "--sparsify", str(tmp_path / "c")]) == 2
    _one_line_error(capsys, "same folder")
    src = tmp_path / "gm"
    src.mkdir()
    export_sparsify(_pretrained("groupmax"), src)
    assert main(["export", str(src), "--saelens", str(tmp_path / "d")]) == 2
    _one_line_error(capsys, "no groupmax architecture")
    assert main(["export", str(tmp_path), "--saelens", str(tmp_path / "e")]) == 2
    _one_line_error(capsys, "holds SAEs for 2 hookpoints (a, gm)", "pass --hookpoint NAME")
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--saelens", str(tmp_path / "e")]) == 2
    _one_line_error(capsys, "no SAE sparsecode reads")
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()
