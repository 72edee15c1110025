"""Statistics: the mergeable reducers (moments, histograms, cross moments), the stats file and its schema, merge."""
