package agentruns

import "context"

// RunIterator walks List's runs page by page. Call Next before each Run; when Next returns
// false, Err says whether it stopped on an error. Not safe for concurrent use.
type RunIterator struct {
	ctx    context.Context
	runs   *AgentRunsService
	params ListParams
	cursor *string // of the next page; nil before the first page unless params.Cursor
	page   []Run
	index  int
	last   bool // the page in hand is the last one
	cur    *Run
	err    error
}

// Next advances to the next run, fetching the next page when the current one is used up.
func (it *RunIterator) Next() bool {
	for it.err == nil {
		if it.index < len(it.page) {
			it.cur = &it.page[it.index]
			it.index++
			return true
		}
		if it.last {
			break
		}
		page, err := it.runs.page(it.ctx, &it.params, it.cursor)
		if err != nil {
			it.err = err
			break
		}
		it.page, it.index = page.Data, 0
		it.cursor = &page.NextCursor
		it.last = page.NextCursor == ""
	}
	it.cur = nil
	return false
}

// Run is the run Next advanced to.
func (it *RunIterator) Run() *Run { return it.cur }

// Err is the error that stopped the iteration, or nil.
func (it *RunIterator) Err() error { return it.err }
