"""StackQL's resource, method and SQL-verb mapping for google.healthcare (generated).

Written by scripts/gen_stackql_resources.py from stackql-healthcare.yaml; do not edit.
"""

from __future__ import annotations

from typing import Any

RESOURCES: dict[str, dict[str, Any]] = {
    "datasets": {
        "methods": {
            "create": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets",
                "http_method": "POST",
                "object_key": None,
            },
            "deidentify": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}:deidentify",
                "http_method": "POST",
                "object_key": None,
            },
            "delete": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}",
                "http_method": "DELETE",
                "object_key": None,
            },
            "get": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}",
                "http_method": "GET",
                "object_key": None,
            },
            "list": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets",
                "http_method": "GET",
                "object_key": "datasets",
            },
            "patch": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}",
                "http_method": "PATCH",
                "object_key": None,
            },
        },
        "sql_verbs": {
            "delete": ["delete"],
            "insert": ["create"],
            "select": ["get", "list"],
            "update": ["patch"],
        },
        "title": "Datasets",
    },
    "datasets_iam_policies": {
        "methods": {
            "get_iam_policy": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}:getIamPolicy",
                "http_method": "GET",
                "object_key": "bindings",
            },
            "set_iam_policy": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}:setIamPolicy",
                "http_method": "POST",
                "object_key": None,
            },
            "test_iam_permissions": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}:testIamPermissions",
                "http_method": "POST",
                "object_key": None,
            },
        },
        "sql_verbs": {"replace": ["set_iam_policy"], "select": ["get_iam_policy"]},
        "title": "Datasets_iam_policies",
    },
    "dicom_store_metrics": {
        "methods": {
            "get_dicomstore_metrics": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}:getDICOMStoreMetrics",
                "http_method": "GET",
                "object_key": None,
            }
        },
        "sql_verbs": {"select": ["get_dicomstore_metrics"]},
        "title": "Dicom_store_metrics",
    },
    "dicom_stores": {
        "methods": {
            "create": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores",
                "http_method": "POST",
                "object_key": None,
            },
            "deidentify": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}:deidentify",
                "http_method": "POST",
                "object_key": None,
            },
            "delete": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}",
                "http_method": "DELETE",
                "object_key": None,
            },
            "export": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}:export",
                "http_method": "POST",
                "object_key": None,
            },
            "get": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}",
                "http_method": "GET",
                "object_key": None,
            },
            "import": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}:import",
                "http_method": "POST",
                "object_key": None,
            },
            "list": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores",
                "http_method": "GET",
                "object_key": "dicomStores",
            },
            "patch": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}",
                "http_method": "PATCH",
                "object_key": None,
            },
            "retrieve_bulkdata": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series/{seriesId}/instances/{instancesId}/bulkdata/{bulkdataId}/{bulkdataId1}",
                "http_method": "GET",
                "object_key": None,
            },
            "retrieve_frames": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series/{seriesId}/instances/{instancesId}/frames/{framesId}",
                "http_method": "GET",
                "object_key": None,
            },
            "retrieve_rendered": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series/{seriesId}/instances/{instancesId}/frames/{framesId}/rendered",
                "http_method": "GET",
                "object_key": None,
            },
            "search_for_instances": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/instances",
                "http_method": "GET",
                "object_key": None,
            },
            "search_for_series": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/series",
                "http_method": "GET",
                "object_key": None,
            },
            "search_for_studies": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies",
                "http_method": "GET",
                "object_key": None,
            },
            "set_blob_storage_settings": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}:setBlobStorageSettings",
                "http_method": "POST",
                "object_key": None,
            },
            "store_instances": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies",
                "http_method": "POST",
                "object_key": None,
            },
        },
        "sql_verbs": {
            "delete": ["delete"],
            "insert": ["create"],
            "select": ["get", "list"],
            "update": ["patch"],
        },
        "title": "Dicom_stores",
    },
    "dicom_stores_iam_policies": {
        "methods": {
            "get_iam_policy": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}:getIamPolicy",
                "http_method": "GET",
                "object_key": "bindings",
            },
            "set_iam_policy": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}:setIamPolicy",
                "http_method": "POST",
                "object_key": None,
            },
            "test_iam_permissions": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}:testIamPermissions",
                "http_method": "POST",
                "object_key": None,
            },
        },
        "sql_verbs": {"replace": ["set_iam_policy"], "select": ["get_iam_policy"]},
        "title": "Dicom_stores_iam_policies",
    },
    "instances": {
        "methods": {
            "delete": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series/{seriesId}/instances/{instancesId}",
                "http_method": "DELETE",
                "object_key": None,
            },
            "retrieve_instance": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series/{seriesId}/instances/{instancesId}",
                "http_method": "GET",
                "object_key": None,
            },
        },
        "sql_verbs": {"delete": ["delete"], "select": ["retrieve_instance"]},
        "title": "Instances",
    },
    "instances_metadata": {
        "methods": {
            "retrieve_metadata": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series/{seriesId}/instances/{instancesId}/metadata",
                "http_method": "GET",
                "object_key": None,
            }
        },
        "sql_verbs": {"select": ["retrieve_metadata"]},
        "title": "Instances_metadata",
    },
    "instances_rendered": {
        "methods": {
            "retrieve_rendered": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series/{seriesId}/instances/{instancesId}/rendered",
                "http_method": "GET",
                "object_key": None,
            }
        },
        "sql_verbs": {"select": ["retrieve_rendered"]},
        "title": "Instances_rendered",
    },
    "instances_storage_info": {
        "methods": {
            "get_storage_info": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series/{seriesId}/instances/{instancesId}:getStorageInfo",
                "http_method": "GET",
                "object_key": None,
            }
        },
        "sql_verbs": {"select": ["get_storage_info"]},
        "title": "Instances_storage_info",
    },
    "locations": {
        "methods": {
            "get": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}",
                "http_method": "GET",
                "object_key": None,
            },
            "list": {
                "flat_path": "v1/projects/{projectsId}/locations",
                "http_method": "GET",
                "object_key": "locations",
            },
        },
        "sql_verbs": {"select": ["get", "list"]},
        "title": "Locations",
    },
    "operations": {
        "methods": {
            "cancel": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/operations/{operationsId}:cancel",
                "http_method": "POST",
                "object_key": None,
            },
            "get": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/operations/{operationsId}",
                "http_method": "GET",
                "object_key": None,
            },
            "list": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/operations",
                "http_method": "GET",
                "object_key": "operations",
            },
        },
        "sql_verbs": {"select": ["get", "list"]},
        "title": "Operations",
    },
    "series": {
        "methods": {
            "delete": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series/{seriesId}",
                "http_method": "DELETE",
                "object_key": None,
            },
            "retrieve_series": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series/{seriesId}",
                "http_method": "GET",
                "object_key": None,
            },
            "search_for_instances": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series/{seriesId}/instances",
                "http_method": "GET",
                "object_key": None,
            },
        },
        "sql_verbs": {"delete": ["delete"], "select": ["retrieve_series"]},
        "title": "Series",
    },
    "series_metadata": {
        "methods": {
            "retrieve_metadata": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series/{seriesId}/metadata",
                "http_method": "GET",
                "object_key": None,
            }
        },
        "sql_verbs": {"select": ["retrieve_metadata"]},
        "title": "Series_metadata",
    },
    "series_metrics": {
        "methods": {
            "get_series_metrics": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series/{seriesId}:getSeriesMetrics",
                "http_method": "GET",
                "object_key": None,
            }
        },
        "sql_verbs": {"select": ["get_series_metrics"]},
        "title": "Series_metrics",
    },
    "studies": {
        "methods": {
            "delete": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}",
                "http_method": "DELETE",
                "object_key": None,
            },
            "search_for_instances": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/instances",
                "http_method": "GET",
                "object_key": None,
            },
            "search_for_series": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/series",
                "http_method": "GET",
                "object_key": None,
            },
            "set_blob_storage_settings": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}:setBlobStorageSettings",
                "http_method": "POST",
                "object_key": None,
            },
            "store_instances": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}",
                "http_method": "POST",
                "object_key": None,
            },
        },
        "sql_verbs": {"delete": ["delete"]},
        "title": "Studies",
    },
    "studies_metadata": {
        "methods": {
            "retrieve_metadata": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}/metadata",
                "http_method": "GET",
                "object_key": None,
            }
        },
        "sql_verbs": {"select": ["retrieve_metadata"]},
        "title": "Studies_metadata",
    },
    "studies_study": {
        "methods": {
            "retrieve_study": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}",
                "http_method": "GET",
                "object_key": None,
            }
        },
        "sql_verbs": {"select": ["retrieve_study"]},
        "title": "Studies_study",
    },
    "study_metrics": {
        "methods": {
            "get_study_metrics": {
                "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/{datasetsId}/dicomStores/{dicomStoresId}/dicomWeb/studies/{studiesId}:getStudyMetrics",
                "http_method": "GET",
                "object_key": None,
            }
        },
        "sql_verbs": {"select": ["get_study_metrics"]},
        "title": "Study_metrics",
    },
}
