//! leadmaps store on postgres (in progress).
