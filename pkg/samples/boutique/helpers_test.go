package boutique

import "os"

func readChainYAML() (string, error) {
	b, err := os.ReadFile("../../../config/samples/boutique/chain.yaml")
	return string(b), err
}
