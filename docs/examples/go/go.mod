module example.com/idv-example

go 1.19
