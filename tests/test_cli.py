from sparsecode.cli import main


def test_demo_prints_recovery_for_every_solver(capsys):
    assert main(["demo", "--samples", "300", "--atoms", "64", "--features", "32", "--k", "3"]) == 0
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
