"""``dicomql deploy init``: writes a starter stack — a dataset and a DICOM store with labels and
notification configs — whose props are the ``dicom_stores`` manifest props of StackQL's docs."""

from __future__ import annotations

import re
from pathlib import Path

from dicomql.deploy.manifest import MANIFEST_FILE, RESOURCES_DIR
from dicomql.errors import DeployError

MANIFEST = """\
# A dicomql deploy stack (stackql-deploy's manifest format).
#   dicomql deploy build  {stack_dir} dev --dry-run
#   dicomql deploy build  {stack_dir} dev
#   dicomql deploy test   {stack_dir} dev
#   dicomql deploy teardown {stack_dir} dev
version: 1
name: {name}
description: a dataset and a DICOM store, per environment
providers:
  - google
globals:
  - name: project
    description: Google Cloud project ID (override with -e GOOGLE_PROJECT=...)
    value: "{{{{ GOOGLE_PROJECT | default('{project}') }}}}"
  - name: location
    description: the region of the dataset
    value: {location}
resources:
  - name: imaging_dataset
    description: the dataset holding the stack's DICOM stores
    props:
      - name: projectsId
        value: "{{{{ project }}}}"
      - name: locationsId
        value: "{{{{ location }}}}"
      - name: datasetId
        value: "{{{{ stack_name }}}}-{{{{ stack_env }}}}"
      - name: timeZone
        value: UTC
    exports:
      - dataset_id
      - dataset_name

  - name: imaging_store
    description: the DICOM store (props as in StackQL's dicom_stores manifest)
    props:
      - name: projectsId
        value: "{{{{ project }}}}"
        description: Required parameter for the dicom_stores resource.
      - name: locationsId
        value: "{{{{ location }}}}"
        description: Required parameter for the dicom_stores resource.
      - name: datasetsId
        value: "{{{{ dataset_id }}}}"
        description: Required parameter for the dicom_stores resource (the dataset's export).
      - name: dicomStoreId
        value: "{{{{ stack_name }}}}-{{{{ stack_env }}}}-store"
      - name: labels
        description: >
          User-supplied key-value pairs used to organize DICOM stores (at most 64; keys and
          values of lowercase letters, digits, _ and -).
        values:
          dev:
            value:
              env: dev
              team: imaging
          prd:
            value:
              env: prd
              team: imaging
      - name: notificationConfigs
        description: Optional. Where and whether to send notifications upon changes.
        values:
          dev:
            value: []
          prd:
            value:
              - pubsubTopic: "projects/{{{{ project }}}}/topics/{{{{ stack_name }}}}-dicom"
    exports:
      - dicom_store_name

exports:
  - dataset_name
  - dicom_store_name
"""

DATASET_IQL = """\
/*+ exists */
SELECT COUNT(*) AS count
FROM google.healthcare.datasets
WHERE projectsId = '{{ projectsId }}'
AND locationsId = '{{ locationsId }}'
AND datasetsId = '{{ datasetId }}';

/*+ create */
INSERT /*+ AWAIT */ INTO google.healthcare.datasets (
projectsId,
locationsId,
datasetId,
data__timeZone
)
SELECT
'{{ projectsId }}',
'{{ locationsId }}',
'{{ datasetId }}',
'{{ timeZone }}';

/*+ statecheck */
SELECT COUNT(*) AS count
FROM google.healthcare.datasets
WHERE projectsId = '{{ projectsId }}'
AND locationsId = '{{ locationsId }}'
AND datasetsId = '{{ datasetId }}'
AND timeZone = '{{ timeZone }}';

/*+ update */
UPDATE google.healthcare.datasets
SET data__timeZone = '{{ timeZone }}'
WHERE projectsId = '{{ projectsId }}'
AND locationsId = '{{ locationsId }}'
AND datasetsId = '{{ datasetId }}'
AND updateMask = 'timeZone';

/*+ exports */
SELECT '{{ datasetId }}' AS dataset_id, name AS dataset_name
FROM google.healthcare.datasets
WHERE projectsId = '{{ projectsId }}'
AND locationsId = '{{ locationsId }}'
AND datasetsId = '{{ datasetId }}';

/*+ delete */
DELETE FROM google.healthcare.datasets
WHERE projectsId = '{{ projectsId }}'
AND locationsId = '{{ locationsId }}'
AND datasetsId = '{{ datasetId }}';
"""

STORE_IQL = """\
/*+ exists */
SELECT COUNT(*) AS count
FROM google.healthcare.dicom_stores
WHERE projectsId = '{{ projectsId }}'
AND locationsId = '{{ locationsId }}'
AND datasetsId = '{{ datasetsId }}'
AND dicomStoresId = '{{ dicomStoreId }}';

/*+ create */
INSERT INTO google.healthcare.dicom_stores (
data__labels,
data__notificationConfigs,
projectsId,
locationsId,
datasetsId,
dicomStoreId
)
SELECT
'{{ labels }}',
'{{ notificationConfigs }}',
'{{ projectsId }}',
'{{ locationsId }}',
'{{ datasetsId }}',
'{{ dicomStoreId }}';

/*+ statecheck */
-- Labels match exactly (same count, same values, in any order) and so do the topics.
SELECT COUNT(*) AS count
FROM google.healthcare.dicom_stores
WHERE projectsId = '{{ projectsId }}'
AND locationsId = '{{ locationsId }}'
AND datasetsId = '{{ datasetsId }}'
AND dicomStoresId = '{{ dicomStoreId }}'
AND {{ labels | json_matches('labels') }}
AND {{ notificationConfigs | json_matches('notificationConfigs') }};

/*+ troubleshoot */
-- What the store holds now, printed when it drifts.
SELECT labels, notificationConfigs
FROM google.healthcare.dicom_stores
WHERE projectsId = '{{ projectsId }}'
AND locationsId = '{{ locationsId }}'
AND datasetsId = '{{ datasetsId }}'
AND dicomStoresId = '{{ dicomStoreId }}';

/*+ update */
UPDATE google.healthcare.dicom_stores
SET
data__labels = '{{ labels }}',
data__notificationConfigs = '{{ notificationConfigs }}'
WHERE projectsId = '{{ projectsId }}'
AND locationsId = '{{ locationsId }}'
AND datasetsId = '{{ datasetsId }}'
AND dicomStoresId = '{{ dicomStoreId }}'
AND updateMask = 'labels,notificationConfigs';

/*+ exports */
SELECT name AS dicom_store_name
FROM google.healthcare.dicom_stores
WHERE projectsId = '{{ projectsId }}'
AND locationsId = '{{ locationsId }}'
AND datasetsId = '{{ datasetsId }}'
AND dicomStoresId = '{{ dicomStoreId }}';

/*+ delete */
DELETE FROM google.healthcare.dicom_stores
WHERE projectsId = '{{ projectsId }}'
AND locationsId = '{{ locationsId }}'
AND datasetsId = '{{ datasetsId }}'
AND dicomStoresId = '{{ dicomStoreId }}';
"""

README = """\
# {name}

A [dicomql deploy](https://github.com/dicomql/dicomql/blob/main/docs/deploy.md) stack: a
dataset and a DICOM store, with labels and Pub/Sub notification configs per environment.

    dicomql deploy build {stack_dir} dev --dry-run   # what would change, with the queries
    dicomql deploy build {stack_dir} dev             # create or update
    dicomql deploy test {stack_dir} dev              # exit 1 if anything drifted
    dicomql deploy teardown {stack_dir} dev          # delete, in reverse order

Without `--endpoint` or `--backend google` the stack is built on the embedded service
(`--data-dir`). Against Google, pass `-e GOOGLE_PROJECT=my-project --backend google`.
"""


def write_starter_stack(
    stack_dir: Path,
    *,
    name: str | None = None,
    project: str = "my-project",
    location: str = "us-central1",
) -> list[Path]:
    """Write the starter stack into ``stack_dir`` (created if missing); returns the files.

    Raises:
        DeployError: ``stack_dir`` already holds a manifest, or a name is not usable.
    """
    manifest_path = stack_dir / MANIFEST_FILE
    if manifest_path.exists():
        raise DeployError(f"{manifest_path} already exists; not overwriting it")
    # Resource IDs allow letters, digits, _ - . (Cloud Healthcare); stackql-deploy derives the
    # name from the directory, replacing _ with -.
    name = name or stack_dir.resolve().name.replace("_", "-").lower()
    if not re.fullmatch(r"[a-z][a-z0-9\-]{0,62}", name):
        raise DeployError(
            f"'{name}' is not a usable stack name (lowercase letters, digits and -); "
            "give one with --name"
        )
    for what, value in (("project", project), ("location", location)):
        if not re.fullmatch(r"[A-Za-z0-9_\-\.:]+", value):
            raise DeployError(f"'{value}' is not a usable {what}")
    values = {"name": name, "project": project, "location": location, "stack_dir": stack_dir}
    files = {
        manifest_path: MANIFEST.format(**values),
        stack_dir / RESOURCES_DIR / "imaging_dataset.iql": DATASET_IQL,
        stack_dir / RESOURCES_DIR / "imaging_store.iql": STORE_IQL,
        stack_dir / "README.md": README.format(**values),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)
