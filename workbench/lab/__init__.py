"""The lab: notebook glue (parameters cell, kernels, clean templates) and three rooms: `sweep`,
`tuner` and `report`."""
