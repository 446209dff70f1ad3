"""%labkit through a real IPython shell, and through a notebook executed by papermill."""

import nbformat
import papermill
import pytest
from IPython.core.interactiveshell import InteractiveShell

import labkit


@pytest.fixture(scope="module")
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "labkit")
    return ip


def test_usage_for_no_or_unknown_subcommand(shell, capsys):
    shell.run_line_magic("labkit", "")
    assert "usage: %labkit" in capsys.readouterr().out
    shell.run_line_magic("labkit", "launch-rockets")
    captured = capsys.readouterr()
    assert "unknown sub-command 'launch-rockets'" in captured.err
    assert "connect [ADDRESS|NAME|local]" in captured.out


def test_connect_status_scale_disconnect_with_variable_expansion(shell, dask_scheduler, capsys):
    shell.user_ns["address"] = dask_scheduler.address
    result = shell.run_cell("%labkit connect {address} --timeout 20")
    assert result.success, result.error_in_exec
    assert labkit.current().address == dask_scheduler.address

    assert shell.run_cell("%labkit status").success
    assert dask_scheduler.address in capsys.readouterr().out

    result = shell.run_cell("%labkit scale 4")
    assert "cannot scale the remote dask cluster" in str(result.error_in_exec)

    assert shell.run_cell("%labkit disconnect").success
    with pytest.raises(labkit.LabkitError):
        labkit.current()


def test_connect_over_tls_with_certificate_options(shell, dask_tls_scheduler):
    files = dask_tls_scheduler.client
    shell.user_ns["tls"] = files
    line = (
        f"%labkit connect {dask_tls_scheduler.address} --tls-ca-file {{tls.ca_file}} "
        "--tls-cert {tls.cert} --tls-key {tls.key}"
    )
    result = shell.run_cell(line)
    assert result.success, result.error_in_exec
    assert labkit.current().address == dask_tls_scheduler.address
    result = shell.run_cell(f"%labkit connect {dask_tls_scheduler.address} --tls-cert x.pem")
    assert "needs --tls-ca-file and --tls-cert" in str(result.error_in_exec)


def test_connect_to_dask_workers_as_slurm_jobs(shell, slurm, tmp_path):
    shell.user_ns["logs"] = str(tmp_path)
    line = (
        "%labkit connect --backend dask --on slurm --jobs 2 --cores 1 --memory 1GiB "
        "--interface lo --job-extra=--comment=labkit --log-directory {logs}"
    )
    result = shell.run_cell(line)
    assert result.success, result.error_in_exec
    cluster = labkit.current()
    try:
        assert len(cluster.workers()) == 2 and len(cluster.jobs()) == 2
    finally:
        assert shell.run_cell("%labkit disconnect").success
    result = shell.run_cell("%labkit connect --backend dask --jobs 2")
    assert "add on='slurm'" in str(result.error_in_exec)


def test_connect_local_with_options(shell):
    result = shell.run_cell("%labkit connect local --backend dask --workers 1")
    assert result.success, result.error_in_exec
    assert labkit.current().resources()["workers"] == 1
    assert shell.run_cell("%labkit scale 2").success
    assert labkit.current().resources()["workers"] == 2


def test_errors_are_one_line_not_a_traceback(shell, capsys):
    result = shell.run_cell("%labkit connect 127.0.0.1:1 --backend ray --timeout 2")
    assert isinstance(result.error_in_exec, labkit.LabkitError)
    err = capsys.readouterr().err
    assert "ConnectError: cannot reach the Ray cluster at 127.0.0.1:1" in err
    assert "Traceback" not in err
    result = shell.run_cell("%labkit scale many")
    assert "invalid int value: 'many'" in str(result.error_in_exec)


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('address = "local"\nbackend = "dask"\noptions = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell("%load_ext labkit"),
        nbformat.v4.new_code_cell(body),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, path)


@pytest.mark.parametrize("backend", ["dask", "ray"])
def test_papermill_injects_the_address(tmp_path, dask_scheduler, ray_head, backend):
    source = tmp_path / "connect.ipynb"
    _notebook(
        source,
        "%labkit connect {address} --backend {backend} {options}\n"
        "import labkit\n"
        "cluster = labkit.current()\n"
        "assert cluster.address == address, cluster.address\n"
        "print('mapped', cluster.map(abs, [-1, -2, -3], progress=False))\n",
    )
    if backend == "dask":
        params = {"address": dask_scheduler.address, "backend": "dask"}
    else:
        params = {
            "address": ray_head.gcs_address,
            "backend": "ray",
            "options": f"--token-file {ray_head.token_file}",
        }
    executed = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        source, executed, parameters=params, kernel_name="python3", progress_bar=False
    )
    outputs = nbformat.read(executed, as_version=4).cells[-1].outputs
    assert any("mapped [1, 2, 3]" in out.get("text", "") for out in outputs)
