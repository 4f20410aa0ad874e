//go:build nodocs

package main

// The installed nsrun is built with -tags nodocs (make build): the man page
// generator (cobra/doc, go-md2man, blackfriday, yaml) stays out of it, and
// their package initialisation out of every start of nsrun and of the
// sandbox child. "make man" builds nsrun with it.

import "github.com/spf13/cobra"

func newGenDocsCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "__gendocs DIR",
		Hidden: true,
		RunE: func(*cobra.Command, []string) error {
			return usageError("this nsrun was built without the man page generator (-tags nodocs); run make man")
		},
	}
}
