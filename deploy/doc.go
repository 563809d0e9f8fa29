// Package deploy holds no code. Its tests check what this directory ships
// for Kubernetes and Istio (kubernetes/, istio/) and the repository's
// Dockerfile, since no cluster and no Docker engine run where the tests do:
// every manifest is decoded strictly with the Kubernetes and Istio API types,
// the kustomizations are rendered as kubectl apply -k would, and the names
// and ports that tie the pieces together are checked against each other and
// against the serve command's flags and admin paths.
//
// The directory is a module of its own, which uses the server's module from
// ../ (a replace directive), so that the Kubernetes, Istio and kustomize
// libraries these tests need stay out of the server's go.mod.
package deploy
