import pytest

from sparsecode.cli import main


def test_demo_prints_recovery_for_every_solver(capsys):
    assert main(["demo", "--samples", "300", "--atoms", "64", "--features", "32", "--k", "3",
                 "--toy-steps", "0", "--file-rows", "0"]) == 0
    out = capsys.readouterr().out
    for name in ("mp", "omp", "omp, no Gram", "gp", "acgp"):
        assert f"\n{name} " in out
    # well-posed problem: OMP recovers nearly every planted atom
    omp_line = next(line for line in out.splitlines() if line.startswith("omp "))
    assert float(omp_line.split()[1].rstrip("%")) > 90


def test_bad_arguments_give_one_line_error_and_exit_code_2(capsys):
    assert main(["demo", "--k", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparsecode: error:") and len(err.strip().splitlines()) == 1


def test_demo_trains_an_mp_sae_on_the_toy(capsys):
    assert main(["demo", "--samples", "100", "--atoms", "16", "--features", "8", "--k", "2",
                 "--toy-steps", "3000", "--toy-correlation", "0.0", "--file-rows", "0"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line[:3].strip().isdigit() and "|" not in line]
    feature_rows = [r for r in rows if ("parent" in r or "leaf" in r or "child" in r)]
    assert len(feature_rows) == 20
    mp_cos = [float(r.split()[-2]) for r in feature_rows]
    assert min(mp_cos) > 0.99  # uncorrelated features: the MP-SAE finds all of them
    assert "MP-SAE: 20 of 20 features recovered" in out


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["train", "a.h5", "--dataset", "x", "--atoms", "4", "--k", "2", "--out", "m.h5",
          "--epochs", "0"], ["argument --epochs: must be >= 1; got 0"]),
        (["train", "a.h5", "--dataset", "x", "--atoms", "4", "--k", "abc", "--out", "m.h5"],
         ["argument --k: must be an integer >= 1; got 'abc'"]),
        (["train", "a.h5", "--dataset", "x", "--atoms", "4", "--k", "2", "--out", "m.h5",
          "--solver", "lasso"], ["argument --solver: invalid choice: 'lasso'"]),
        (["encode", "m.h5", "a.h5", "--out", "c.h5", "--buffer-mb", "-1"],
         ["argument --buffer-mb: must be a finite number > 0; got -1"]),
        (["train", "a.h5", "--dataset", "x", "--atoms", "4", "--k", "2", "--out", "m.h5",
          "--lr", "inf"], ["argument --lr: must be a finite number > 0"]),
    ],
)
def test_bad_options_name_the_option_in_one_line(argv, fragments, capsys, tmp_path,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparsecode: error: argument") and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_help_still_exits_0(capsys):
    assert main(["train", "--help"]) == 0
    assert "--epochs" in capsys.readouterr().out
