"""The OHIF viewer that ``dicomql serve --viewer`` serves: where its files live and how they are
obtained (``dicomql viewer install``). OHIF is not dicomql's code; docs/viewer.md."""
