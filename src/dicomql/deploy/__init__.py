"""``dicomql deploy``: stackql-deploy style stacks (a manifest plus anchored ``.iql`` queries)
that build, test and tear down datasets and DICOM stores through dicomql's SQL engine.

Modules: :mod:`~dicomql.deploy.manifest` (load and validate), :mod:`~dicomql.deploy.queries`
(anchored query files), :mod:`~dicomql.deploy.render` (Jinja templating),
:mod:`~dicomql.deploy.runner` (build, test, teardown), :mod:`~dicomql.deploy.init` (a starter
stack) and :mod:`~dicomql.deploy.cli` (the click commands). Nothing is imported here, so that
``dicomql exec`` does not pay for YAML and Jinja at startup.
"""

from __future__ import annotations
