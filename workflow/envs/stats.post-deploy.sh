#!/usr/bin/env bash
# Runs once, inside the new conda environment, after Snakemake creates it. Installs the package of the repository
# the workflow runs from (FLOW_MBPO_PWM_SOURCE, set by workflow/rules/common.smk: Snakemake copies this script and
# the env file into .snakemake/conda/, so a relative path would point there). Editable, so the env follows the
# code of the checkout instead of freezing the version it was created with. Its dependencies come from the env file.
set -euo pipefail
python -m pip install --no-deps --editable "${FLOW_MBPO_PWM_SOURCE:?set by the workflow (workflow/rules/common.smk)}"
