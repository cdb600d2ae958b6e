module github.com/agentruns/agentruns-go

go 1.19
