"""The Colab notebook runs top to bottom in a Colab-like layout.

Colab's working directory (/content) holds the clone, named ``hubjax``. The notebook's install
cell installs it as a regular package; here that install goes to a private folder (so the
test environment is untouched) and the cells run with that folder on the path, the working
directory holding a ``hubjax`` clone, exactly where an editable install used to be shadowed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "distributed_hub_values.ipynb"


def test_notebook_runs_in_a_colab_layout(tmp_path):
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code, installs = [], []
    for cell in cells:
        if cell["cell_type"] == "code":
            for line in "".join(cell["source"]).splitlines():
                stripped = line.lstrip()
                if stripped.startswith("%pip install"):
                    installs.append(stripped.split()[-1])
                elif not stripped.startswith(("%", "!")):
                    code.append(line)
    assert installs == ["/content/hubjax"]  # the install cell names the clone
    (tmp_path / "hubjax").symlink_to(ROOT)  # the clone in the working directory
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    source = "\n".join(code).replace("(20_003, 256)", "(2_003, 32)")  # smaller for CI
    script = tmp_path / "notebook.py"
    script.write_text("import sys; sys.path.insert(0, '')\n" + source)
    env = dict(os.environ, PYTHONPATH=str(site))
    res = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("True") >= 3, res.stdout
