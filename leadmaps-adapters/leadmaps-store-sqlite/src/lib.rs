//! leadmaps store on sqlite (in progress).
